"""What the demo computes: SNMN's answer to one question about one image, and how it got there.

Asked "What color is the large rubber thing?" about CLEVR_val_000007.png, the service reads that
image's features from the split's shards (for an uploaded PNG it runs the very backbone that
extracted them, checked against the manifest's weight digest), runs the EMA model once and
returns the trace: for every step whose module is not NoOp, the module and its probability, the
question words weighted by that step's text attention, the attention map on top of the stack
(softmax over the H×W cells) and the stack depth; then the answer (VQA) and/or the box
(CLEVR-Ref). A word the training questions never used is read as <unk> and marked unknown.
The images offered are those of the split that have features (FeatureStore.image_indices): on a
subset of CLEVR, the ones present, gaps and all; any other id is a 404.

A model comes from a model.pt path or an MLflow URI (runs:/<run id>[/<artifact>.pt],
models:/<name>/<version>, models:/<name>@<alias>, models:/<logged model id>); only the model.pt
file is ever read, with weights_only=True, never a pickled MLflow model. Torch work runs one
request at a time behind a lock with a bounded number of intra-op threads.

Shape legend: T steps, S question words, M modules, H×W grid, A answers.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel

from pipeline.config import ServeConfig
from pipeline.data.shards import FeatureStore, manifest_path
from pipeline.data.text import SPECIAL_TOKENS, UNK_ID, Vocabulary, tokenize_text
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError, DataError
from pipeline.runtime.artifact import MODEL_FILE, first_line, load_trained_model
from pipeline.runtime.inference import StepTrace, step_trace
from pipeline.tables import read_parquet
from pipeline.tracking import download_artifact, registered_model_run
from pipeline.vision.backbone import build_backbone, state_digest
from pipeline.vision.features import CALIBRATION_FILE, Extractor
from pipeline.vision.images import check_png_size, image_name, load_image
from snmn.boxes import BoxGrid, predict_boxes
from snmn.layout import MODULE_NAMES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_IMAGE_SIDE = 16
MLFLOW_MODEL_ARTIFACT = f"training/{MODEL_FILE}"  # where write_training_outputs logs model.pt
UPLOAD_CACHE_SIZE = 16  # features of recently uploaded PNGs, by sha256 of their bytes
SUGGESTIONS_PER_IMAGE = 10
TOP_ANSWERS = 5


class DemoError(Exception):
    """A request the demo cannot answer; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# What a request gets back (also the OpenAPI schema)
# ---------------------------------------------------------------------------------------------


class Word(BaseModel):
    text: str
    known: bool  # False: not in the training vocabulary; the model read <unk>


class Score(BaseModel):
    name: str
    probability: float


class Step(BaseModel):
    step: int  # 1..T
    module: str  # the controller's most likely module at this step
    probability: float
    modules: list[Score]  # the three most likely modules
    word_attention: list[float]  # [S] text attention over the question words
    attention: list[list[float]]  # [H][W] softmax of the top of the stack, sums to 1
    stack_depth: int  # stack pointer after the step (0 = empty)


class Box(BaseModel):
    """Pixels of the image asked about, +1 pixel convention (x2 = x + width - 1); the model's
    box with its corners ordered and clipped to the image, so that it can be drawn."""

    x: float
    y: float
    width: float
    height: float


class Reasoning(BaseModel):
    question: str
    words: list[Word]
    unknown_words: list[str]
    answer: str | None  # VQA models
    top_answers: list[Score]
    box: Box | None  # CLEVR-Ref models
    steps: list[Step]  # NoOp steps left out (all steps if every one is NoOp)
    folded_steps: list[int]  # the steps left out
    image_width: int
    image_height: int
    seconds: float  # inference time (features + model)


# ---------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------


class DemoService:
    """The model, the split's images and features, and the upload backbone; `ask*` answer."""

    def __init__(self, settings: ServeConfig, tracking_uri: str = "") -> None:
        torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.device = resolve_device(settings.device, "serve.device")
        self._downloads = tempfile.TemporaryDirectory(prefix="snmn-serve-")
        path = resolve_model_file(settings.model, tracking_uri, Path(self._downloads.name))
        self.model, payload = load_trained_model(path, str(self.device))
        self.words = Vocabulary(tuple(payload["question_words"]), SPECIAL_TOKENS)
        self.answers = list(payload["answer_words"])
        self.fingerprint = str(payload.get("fingerprint", ""))
        uri = settings.model.startswith(("runs:/", "models:/"))
        self.model_source = settings.model if uri else Path(settings.model).name  # no server paths
        self.store = FeatureStore(manifest_path(settings.features_dir, settings.split))
        self._check_grid()
        self.images = Path(settings.images_dir) / settings.split
        self.suggestions = suggested_questions(settings.tokens_dir, settings.split)
        self.upload_problem = ""
        self.encoder: Extractor | None = None
        try:
            backbone = rebuild_backbone(Path(settings.features_dir), self.store.manifest)
            self.encoder = Extractor(backbone, self.device, self.store.manifest["dtype"], 1)
        except (ConfigError, DataError) as error:
            self.upload_problem = f"uploads are off: {error}"
        self._lock = threading.Lock()
        # sha256 of a PNG → (its features [H, W, C], its (height, width)), most recent last
        self._uploads: OrderedDict[str, tuple[np.ndarray, tuple[int, int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.store)

    def info(self) -> dict[str, Any]:
        config, manifest = self.model.config, self.store.manifest
        return {
            "model": {
                "source": self.model_source,
                "fingerprint": self.fingerprint,
                "task": config.task,
                "steps": config.num_steps,
                "grid": [config.feature_height, config.feature_width],
                "words": len(self.words),
                "answers": len(self.answers),
                "modules": list(MODULE_NAMES),
            },
            "images": {"split": self.settings.split, "count": len(self)},
            "features": {
                "backbone": manifest["backbone"],
                "weights": manifest["weights_description"],
                "pretrained": bool(manifest["pretrained"]),
                "input_size": manifest["input_size"],
            },
            "uploads": {
                "enabled": self.encoder is not None,
                "problem": self.upload_problem,
                "max_bytes": self.settings.max_upload_bytes,
                "max_side": self.settings.max_image_side,
            },
            "max_question_chars": self.settings.max_question_chars,
        }

    def image_path(self, image_id: int) -> Path:
        """The PNG of image `image_id` of the split (the id is checked, never a request path)."""
        self._check_id(image_id)
        path = self.images / image_name(self.settings.split, image_id)
        if not path.is_file():
            raise DemoError(404, f"image {image_id}: its PNG is missing from the image set")
        return path

    def questions(self, image_id: int) -> list[str]:
        self._check_id(image_id)
        return self.suggestions.get(image_id, [])

    def ask(self, image_id: int, question: str) -> Reasoning:
        """The reasoning for `question` about image `image_id` of the split."""
        self.check_question(question)
        path = self.image_path(image_id)
        with Image.open(path) as image:
            width, height = image.size  # PIL: (width, height)
        with self._lock:
            started = time.perf_counter()
            features = np.asarray(self.store[image_id], dtype=np.float32)  # [H, W, C]
            return self._reason(question, features, (height, width), started)

    def ask_upload(self, data: bytes, question: str) -> Reasoning:
        """The reasoning for `question` about an uploaded PNG (features extracted here).

        Decoding runs under the lock too, so at most one decoded image is in memory."""
        self.check_question(question)
        if self.encoder is None:
            raise DemoError(400, self.upload_problem)
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            started = time.perf_counter()
            if key not in self._uploads:
                height, width = self.store.manifest["input_size"]
                pixels, size = decode_png(data, height, width, self.settings)
                batch = torch.from_numpy(pixels)[None]  # [1, height, width, 3] uint8
                features = self.encoder(batch, "uploaded PNG")[0].astype(np.float32)
                self._uploads[key] = (features, size)
                while len(self._uploads) > UPLOAD_CACHE_SIZE:
                    self._uploads.popitem(last=False)
            self._uploads.move_to_end(key)
            features, image_size = self._uploads[key]
            return self._reason(question, features, image_size, started)

    def check_question(self, question: str) -> list[str]:
        """The question's words; DemoError 422 when it is empty, too long or not Unicode text."""
        limit = self.settings.max_question_chars
        if len(question) > limit:
            raise DemoError(422, f"question: {len(question)} characters, at most {limit} allowed")
        try:
            question.encode("utf-8")
        except UnicodeEncodeError as error:  # JSON "\ud800": half of a UTF-16 pair, no character
            raise DemoError(
                422,
                f"question: not valid Unicode text (a lone surrogate {question[error.start]!a} at "
                f"character {error.start + 1})",
            ) from None
        words = tokenize_text(question)
        if not words:
            raise DemoError(422, "question: empty; type a question about the image")
        return words

    # -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def _reason(
        self, question: str, features: np.ndarray, image_size: tuple[int, int], started: float
    ) -> Reasoning:
        """The reasoning on `features` of an image of image_size (height, width) pixels."""
        height, width = image_size
        words = self.check_question(question)
        ids = self.words.encode(words)
        tokens = torch.tensor([ids], device=self.device)  # [1, S]
        lengths = torch.tensor([len(ids)], device=self.device)
        output = self.model(tokens, lengths, torch.from_numpy(features)[None].to(self.device))
        config = self.model.config
        trace = step_trace(output, 0, len(ids))
        steps = [_step(trace, t) for t in trace.shown]
        answer, top_answers, box = None, [], None
        if output.answer_logits is not None:
            probabilities = output.answer_logits[0].float().softmax(dim=0).cpu()  # [A]
            top_answers = _top(probabilities, self.answers, TOP_ANSWERS)
            answer = top_answers[0].name
        if output.cell_scores is not None:
            grid = BoxGrid(config.feature_height, config.feature_width, height, width)
            box = _inside(predict_boxes(output.cell_scores, output.box_offsets, grid)[0], grid)
        marked = [Word(text=w, known=i != UNK_ID) for w, i in zip(words, ids, strict=True)]
        return Reasoning(
            question=question,
            words=marked,
            unknown_words=[word.text for word in marked if not word.known],
            answer=answer,
            top_answers=top_answers,
            box=box,
            steps=steps,
            folded_steps=[t + 1 for t in trace.folded],
            image_width=width,
            image_height=height,
            seconds=round(time.perf_counter() - started, 4),
        )

    def _check_id(self, image_id: int) -> None:
        known = self.store.image_indices
        position = int(np.searchsorted(known, image_id))
        if position == len(known) or known[position] != image_id:
            raise DemoError(
                404,
                f"image {image_id} not found: split {self.settings.split!r} has {len(known)} "
                f"images with features, ids {known[0]}..{known[-1]}",
            )

    def _check_grid(self) -> None:
        config = self.model.config
        expected = [config.feature_height, config.feature_width, config.feature_dim]
        if list(self.store.shape) != expected:
            raise ConfigError(
                f"serve: the model reads features {expected} but {self.store.manifest_path} "
                f"holds {list(self.store.shape)}: serve the split the model was trained for"
            )


# ---------------------------------------------------------------------------------------------
# Loading: the model file, the backbone of uploads, suggested questions, an uploaded PNG
# ---------------------------------------------------------------------------------------------


def resolve_model_file(model: str, tracking_uri: str, download_dir: Path) -> Path:
    """A local model.pt for `model`: the path itself, or the file downloaded from MLflow."""
    if not model.startswith(("runs:/", "models:/")):
        path = Path(model)
        if not path.is_file():
            raise ConfigError(
                f"serve.model: {path}: model file not found (run `snmn train`, or give an MLflow "
                f"URI runs:/<run id> or models:/<name>/<version>)"
            )
        return path
    if model.startswith("runs:/"):
        run_id, _, artifact = model.removeprefix("runs:/").partition("/")
        artifact = artifact or MLFLOW_MODEL_ARTIFACT
    else:
        run_id, artifact = _registered_run(model, tracking_uri), MLFLOW_MODEL_ARTIFACT
    if not run_id or not artifact.endswith(".pt"):
        raise ConfigError(
            f"serve.model: {model}: expected runs:/<run id> or runs:/<run id>/<file>.pt (the demo "
            f"reads only model.pt files, which load without unpickling code)"
        )
    try:
        local = download_artifact(run_id, artifact, download_dir, tracking_uri)
    except Exception as error:  # MlflowException, OSError: all mean "not there"
        raise ConfigError(
            f"serve.model: cannot get {artifact} of MLflow run {run_id} from {tracking_uri}: "
            f"{first_line(error)}"
        ) from None
    return Path(local)


def _registered_run(model: str, tracking_uri: str) -> str:
    """The run that logged the model of models:/<name>/<version|latest>, @<alias> or /<m-id>."""
    try:
        return registered_model_run(model.removeprefix("models:/"), tracking_uri)
    except Exception as error:
        raise ConfigError(
            f"serve.model: {model}: not found in MLflow at {tracking_uri}: {first_line(error)}"
        ) from None


def rebuild_backbone(features_dir: Path, manifest: dict[str, Any]):
    """The backbone that extracted `manifest`'s features; ConfigError/DataError if it differs.

    Random weights follow from the seed saved with the calibrated BatchNorm statistics next to
    the features; every case ends with the weight digest compared to the manifest's."""
    weights = manifest["weights"]
    if weights == "random":
        path = features_dir / CALIBRATION_FILE
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            seed, statistics = int(saved["meta"]["seed"]), saved["state"]
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
            reason = first_line(error)
            raise DataError(f"{path}: cannot read the calibrated backbone: {reason}") from None
        backbone, _ = build_backbone(manifest["backbone"], "random", seed)
        backbone.trunk.load_state_dict(statistics, strict=False)
    else:
        backbone, _ = build_backbone(manifest["backbone"], weights, seed=0)
    if state_digest(backbone) != manifest["weights_sha256"]:
        raise DataError(
            f"the backbone rebuilt from {weights!r} differs from the one that extracted the "
            f"features (weight digest mismatch)"
        )
    return backbone


def suggested_questions(tokens_dir: str | Path, split: str) -> dict[int, list[str]]:
    """image index → the split's questions about it (none when the table is missing)."""
    path = Path(tokens_dir) / f"{split}.parquet"
    if not path.is_file():
        return {}
    table = read_parquet(path, columns=["image_index", "question"])
    questions: dict[int, list[str]] = {}
    for index, text in zip(
        table["image_index"].to_pylist(), table["question"].to_pylist(), strict=True
    ):
        chosen = questions.setdefault(int(index), [])
        if len(chosen) < SUGGESTIONS_PER_IMAGE and text not in chosen:
            chosen.append(text)
    return questions


class _Upload(io.BytesIO):
    """Bytes of an uploaded PNG that name themselves so in load_image's error messages."""

    def __str__(self) -> str:
        return "uploaded PNG"

    __repr__ = __str__


def decode_png(
    data: bytes, height: int, width: int, settings: ServeConfig
) -> tuple[np.ndarray, tuple[int, int]]:
    """(RGB uint8 [height, width, 3] as extraction makes it, the PNG's own (height, width))."""
    if not data:
        raise DemoError(400, "upload: the body is empty; send the PNG file's bytes")
    if not data.startswith(PNG_SIGNATURE):
        raise DemoError(415, "upload: not a PNG file (it does not start with the PNG signature)")
    try:
        size = check_png_size(_Upload(data), "upload", settings.max_image_side, MIN_IMAGE_SIDE)
        pixels = load_image(_Upload(data), height, width)  # [height, width, 3]
    except DataError as error:
        raise DemoError(400, str(error)) from None
    if size is None:  # load_image read what the header check could not
        raise DemoError(400, "upload: cannot read the PNG header")
    return pixels, size


def _step(trace: StepTrace, t: int) -> Step:
    """Step t (from 0) of the trace as the API shows it, numbers rounded to 4 decimals."""
    module = int(trace.modules[t])
    return Step(
        step=t + 1,
        module=MODULE_NAMES[module],
        probability=_round(trace.module_weights[t, module]),
        modules=_top(torch.from_numpy(trace.module_weights[t]), MODULE_NAMES, 3),
        word_attention=[_round(v) for v in trace.text_attention[t]],
        attention=[[_round(v) for v in row] for row in trace.attention[t]],
        stack_depth=int(trace.depth[t]),
    )


def _inside(box: torch.Tensor, grid: BoxGrid) -> Box:
    """The predicted box [x, y, w, h] with its corners ordered and clipped to the image."""
    x, y, w, h = box.tolist()
    x1, x2 = (min(max(v, 0.0), grid.image_width - 1.0) for v in sorted((x, x + w - 1)))
    y1, y2 = (min(max(v, 0.0), grid.image_height - 1.0) for v in sorted((y, y + h - 1)))
    return Box(
        x=round(x1, 1), y=round(y1, 1), width=round(x2 - x1 + 1, 1), height=round(y2 - y1 + 1, 1)
    )


def _top(probabilities: torch.Tensor, names: list[str] | tuple[str, ...], k: int) -> list[Score]:
    values, indices = probabilities.topk(min(k, len(names)))
    return [
        Score(name=names[int(i)], probability=_round(v))
        for v, i in zip(values, indices, strict=True)
    ]


def _round(value: torch.Tensor | float) -> float:
    return round(float(value), 4)
