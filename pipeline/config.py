"""One typed configuration for the whole pipeline, built strictly from params.yaml.

Every DVC stage reads the same `params.yaml`. For a question such as "How many red cubes are
there?" the generator needs `generate.*`, the tokeniser `tokenize.*`, the model `model.*` and so
on; each function takes only the section it needs. An unknown key or a value of the wrong type is
an error that names the dotted key (``train.batch_size: expected int, got 'abc'``), so a typo in
params.yaml never silently falls back to a default.

Values are checked when the Config is built, not when a stage first uses them: `model.embed_dim: 0`
or `train.keep_checkpoints: 0` stop `snmn train` with one line naming the key before any data is
read or Ray starts. The file itself is read strictly too: an empty file, a key written twice (YAML
would keep the last `train:` section and silently drop the first) or a file that is not UTF-8 text
is a ConfigError naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pipeline.errors import ConfigError
from snmn.config import ModelConfig


def check_at_least(section: str, config: Any, least: dict[str, int | float]) -> None:
    """ConfigError naming the first field of `config` that is below its least value."""
    for name, bound in least.items():
        value = getattr(config, name)
        if value < bound:
            raise ConfigError(f"{section}.{name}: must be >= {bound}, got {value}")


def check_positive(section: str, config: Any, names: tuple[str, ...]) -> None:
    """ConfigError naming the first of `names` that is not > 0 (rates, temperatures, norms)."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ConfigError(f"{section}.{name}: must be > 0, got {value}")


# ---------------------------------------------------------------------------------------------
# Sections. Each stage owns one; defaults are the offline mini-CLEVR run.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateConfig:
    """The offline mini-CLEVR generator (pipeline/minclevr)."""

    seed: int = 0
    output_dir: str = "data/mini-clevr"  # CLEVR_v1.0-style tree: images/, scenes/, questions/
    num_images: dict[str, int] = field(  # per CLEVR split (train, val, test)
        default_factory=lambda: {"train": 2000, "val": 400, "test": 100}
    )
    questions_per_image: int = 10
    refexps_per_image: int = 2  # CLEVR-Ref expressions per image; loc_{split} reuses the pictures
    min_objects: int = 3  # 2..10 objects per scene
    max_objects: int = 6
    image_width: int = 480
    image_height: int = 320
    min_visible_pixels: int = 200  # every object shows at least this many pixels, else re-sample
    workers: int = 2  # processes rendering images in parallel (output does not depend on it)


@dataclass(frozen=True)
class TokenizeConfig:
    """Questions → token ids, answers, expert layouts, REF box targets (Parquet)."""

    questions_dir: str = "data/mini-clevr/questions"
    output_dir: str = "data/tokens"  # {split}.parquet and vocab_{question,answer,layout}.json
    summary_path: str = "metrics/tokenize.json"  # counts for DVC metrics (outside output_dir)
    dataset: str = "CLEVR"  # file prefix: questions/{dataset}_{split}_questions.json
    vqa_splits: tuple[str, ...] = ("train", "val", "test")
    ref_splits: tuple[str, ...] = ("loc_train", "loc_val", "loc_test")
    vocab_split: str = "train"  # word and answer vocabularies come from this split only
    max_question_tokens: int = 100  # a longer question is an error (real CLEVR: under 50)
    drop_long_layouts: bool = False  # True: drop questions whose layout exceeds T (counted)
    image_width: int = 480  # pixels of the images the CLEVR-Ref boxes refer to
    image_height: int = 320

    def __post_init__(self) -> None:
        minimum = {"max_question_tokens": 1, "image_width": 1, "image_height": 1}
        check_at_least("tokenize", self, minimum)
        if not self.vocab_split:
            raise ConfigError("tokenize.vocab_split: must name the split the vocabulary comes from")


@dataclass(frozen=True)
class ExtractConfig:
    """ResNet conv4 features into sharded HDF5 (pipeline/vision/features.py)."""

    images_dir: str = "data/mini-clevr/images"  # images/{split}/CLEVR_{split}_%06d.png
    output_dir: str = "data/features"  # {split}/manifest.json + {split}/{split}_%05d.h5
    splits: tuple[str, ...] = ("train", "val", "test")
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet101"
    weights: str = "random"  # imagenet | random | a path to a state_dict file
    input_height: int = 224  # every image is resized to this (480x320 CLEVR → 224x224 → 14x14)
    input_width: int = 224
    dtype: Literal["float16", "float32"] = "float16"
    shard_size: int = 512  # images per HDF5 file
    batch_size: int = 16  # images decoded and forwarded together (halved on out-of-memory)
    decode_workers: int = 2  # processes decoding and resizing PNGs while the network runs
    num_workers: int = 1  # >1 or a ray_address: shards become Ray tasks (one GPU each)
    ray_address: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    calibration_images: int = 64  # random weights: BatchNorm statistics from this many images
    seed: int = 0

    def __post_init__(self) -> None:
        minimum = {"input_height": 32, "input_width": 32, "shard_size": 1, "batch_size": 1}
        minimum |= {"decode_workers": 0, "num_workers": 1, "calibration_images": 1}
        check_at_least("extract", self, minimum)
        if not self.splits:
            raise ConfigError("extract.splits: must name at least one split")


@dataclass(frozen=True)
class PretrainConfig:
    """A ResNet conv4 backbone trained on the TRAIN scenes' objects (vision/pretrain.py)."""

    images_dir: str = "data/mini-clevr/images"  # reads images_dir/train only
    scenes_dir: str = "data/mini-clevr/scenes"  # reads {dataset}_train_scenes.json only
    dataset: str = "CLEVR"
    output_path: str = "data/backbone/scenes_resnet18.pt"  # what extract.weights points at
    metrics_path: str = "metrics/pretrain.json"
    curve_path: str = "metrics/pretrain_curve.csv"
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet18"
    input_height: int = 160  # must equal extract.input_height / input_width
    input_width: int = 240
    epochs: int = 7  # 7 × 1,400 train images: ~2 min on 2 cores with AMX, ~8 without
    batch_size: int = 16
    learning_rate: float = 2e-3  # Adam, warm-up then cosine decay to 0
    weight_decay: float = 1e-5
    min_coverage: float = 0.25  # a cell shows the object covering at least this much of it
    horizontal_flip: bool = True  # mirror each image with probability 1/2 (same attributes)
    photometric_jitter: float = 0.0  # 0 = off; s: brightness, contrast ×U(1-s, 1+s), gamma, blur
    max_images: int = 0  # 0 = every train image
    holdout_images: int = 100  # last train images, never trained on: the held-out accuracy
    precision: Literal["auto", "bfloat16", "float32"] = "auto"  # auto: bfloat16 on GPU or AMX
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    log_every: int = 10  # steps per row of the training curve
    torch_threads: int = 0  # 0 = every available core
    seed: int = 0

    def __post_init__(self) -> None:
        minimum = {"input_height": 32, "input_width": 32, "epochs": 1, "batch_size": 1}
        minimum |= {"max_images": 0, "holdout_images": 0, "log_every": 1, "torch_threads": 0}
        check_at_least("pretrain", self, minimum | {"weight_decay": 0})
        check_positive("pretrain", self, ("learning_rate",))
        if not 0.0 < self.min_coverage <= 1.0:
            raise ConfigError(f"pretrain.min_coverage: must be in (0, 1], got {self.min_coverage}")
        if not 0.0 <= self.photometric_jitter < 1.0:
            raise ConfigError(
                f"pretrain.photometric_jitter: must be in [0, 1), got {self.photometric_jitter}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Training with Ray Train DDP (the paper's training setup, the official release's values)."""

    tokens_dir: str = "data/tokens"
    features_dir: str = "data/features"
    output_dir: str = "models"  # the final model, metrics and curve that DVC tracks
    runs_dir: str = "runs"  # Ray Train storage: directory checkpoints (survives reruns)
    vqa_train_split: str = "train"  # model.task vqa / joint
    vqa_val_split: str = "val"
    ref_train_split: str = "loc_train"  # model.task ref / joint (CLEVR-Ref)
    ref_val_split: str = "loc_val"
    use_layouts: bool = True  # supervise the controller with expert layouts
    iterations: int = 200_000  # official
    batch_size: int = 64  # global batch, split over the workers; official
    learning_rate: float = 1e-4  # Adam; official (peak value when a schedule is set)
    warmup_iterations: int = 0  # linear warm-up from 0 to learning_rate; official: none
    lr_schedule: str = "constant"  # constant (official) | cosine: decay to 0 at `iterations`
    # A curriculum (official: none): stage k lasts curriculum_iterations[k] iterations and draws
    # only questions whose expert layout has at most curriculum_max_modules[k] modules.
    curriculum_iterations: list[int] = field(default_factory=list)
    curriculum_max_modules: list[int] = field(default_factory=list)
    weight_decay: float = 1e-5  # L2 on conv/linear weights only; official
    grad_clip: float = 8.0  # global norm; official
    ema_decay: float = 0.999  # official
    layout_loss_weight: float = 1.0  # official
    entropy_weight: float = 0.1  # scratch runs only; official
    entropy_ramp_start: int = 150_000  # the entropy weight ramps 0 → 1 over these iterations
    entropy_ramp_end: int = 160_000
    ref_cell_weight: float = 1.0  # joint runs halve both (0.5 / 0.5) as the official configs
    ref_offset_weight: float = 1.0
    log_every: int = 100
    eval_every: int = 5000
    eval_max_questions: int = 0  # 0 = the whole validation split
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2
    # page_cache: each batch read from the shards (one copy per machine, in the OS page cache);
    # device: the whole split on the training device (GPU memory; RAM on the CPU)
    features_storage: Literal["page_cache", "device"] = "page_cache"
    features_read_threads: int = 1  # page_cache: threads reading one batch (overlap disk reads)
    loader_workers: int = 0  # DataLoader processes per training worker
    seed: int = 0
    num_workers: int = 1  # Ray Train workers (one process each; one GPU each with use_gpu)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    ray_address: str = ""  # empty: start a local Ray for this command
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_SPREAD (one worker per node)
    max_failures: int = 1  # a dead worker restarts the group from the last checkpoint
    torch_threads: int = 0  # intra-op threads per worker; 0 = cores / workers
    mlflow_tracking_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    mlflow_experiment: str = "snmn"

    def __post_init__(self) -> None:
        choices = {
            "placement_strategy": ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
            "lr_schedule": ("constant", "cosine"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"train.{name}: expected one of {list(allowed)}, got {getattr(self, name)!r}"
                )
        counts = {"iterations": 1, "batch_size": 1, "log_every": 1, "eval_every": 1}
        counts |= {"checkpoint_every": 1, "keep_checkpoints": 1, "num_workers": 1}
        counts |= {"warmup_iterations": 0, "eval_max_questions": 0, "loader_workers": 0}
        counts |= {"torch_threads": 0, "entropy_ramp_start": 0, "features_read_threads": 1}
        counts |= {"max_failures": -1}  # Ray Train's FailureConfig: -1 = retry forever
        weights = {"weight_decay": 0, "layout_loss_weight": 0, "entropy_weight": 0}
        weights |= {"ref_cell_weight": 0, "ref_offset_weight": 0}
        check_at_least("train", self, counts | weights)
        check_positive("train", self, ("learning_rate", "grad_clip", "cpus_per_worker"))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.entropy_ramp_end < self.entropy_ramp_start:
            raise ConfigError(
                f"train.entropy_ramp_end {self.entropy_ramp_end} must not come before "
                f"train.entropy_ramp_start {self.entropy_ramp_start}"
            )
        if len(self.curriculum_iterations) != len(self.curriculum_max_modules):
            raise ConfigError(
                "train.curriculum_iterations and train.curriculum_max_modules: one value per "
                f"stage, got {len(self.curriculum_iterations)} and "
                f"{len(self.curriculum_max_modules)}"
            )
        for name in ("curriculum_iterations", "curriculum_max_modules"):
            if any(value < 1 for value in getattr(self, name)):
                raise ConfigError(f"train.{name}: every stage must be at least 1")
        if self.features_storage == "device" and self.loader_workers:
            raise ConfigError(
                "train.features_storage device gathers batches on the training device, in the "
                f"training process: set train.loader_workers 0 (got {self.loader_workers})"
            )
        if self.batch_size % self.num_workers:
            raise ConfigError(
                f"train.batch_size {self.batch_size} must divide evenly over "
                f"train.num_workers {self.num_workers}"
            )


@dataclass(frozen=True)
class ServeConfig:
    """The interactive demo `snmn serve` (demo/app.py): which model, which images, limits."""

    model: str = "models/model.pt"  # model.pt path, or MLflow URI runs:/<id>, models:/<name>/<v>
    features_dir: str = "data/features"  # {split}/manifest.json (+ the calibrated random backbone)
    images_dir: str = "data/mini-clevr/images"  # {split}/CLEVR_{split}_%06d.png
    tokens_dir: str = "data/tokens"  # {split}.parquet: the suggested questions of each image
    split: str = "val"  # the image set shown
    host: str = "127.0.0.1"  # loopback only by default
    port: int = 8000
    mlflow_tracking_uri: str = ""  # for MLflow model URIs; empty: train.mlflow_tracking_uri
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    torch_threads: int = 2  # intra-op threads of the one inference lane (requests queue on a lock)
    max_upload_bytes: int = 5_000_000  # an uploaded PNG; a larger body is refused while reading
    max_question_chars: int = 1000
    max_image_side: int = 4096  # pixels; an uploaded PNG larger than this either way is refused
    max_connections: int = 64  # requests at work (body received) at once; more get 503

    def __post_init__(self) -> None:
        minimum = {"port": 1, "torch_threads": 1, "max_upload_bytes": 1024}
        minimum |= {"max_question_chars": 1, "max_image_side": 16, "max_connections": 1}
        check_at_least("serve", self, minimum)
        if self.port > 65535:
            raise ConfigError(f"serve.port: must be <= 65535, got {self.port}")


@dataclass(frozen=True)
class EvaluateConfig:
    """The trained model on the evaluation splits, against the paper (evaluation/evaluate.py)."""

    model_path: str = "models/model.pt"  # written by the train stage (EMA weights)
    tokens_dir: str = "data/tokens"
    features_dir: str = "data/features"
    questions_dir: str = "data/mini-clevr/questions"  # programs, for faithfulness
    scenes_dir: str = "data/mini-clevr/scenes"  # objects and masks, for faithfulness
    dataset: str = "CLEVR"  # file prefix, as tokenize.dataset
    vqa_split: str = "val"  # empty: skip
    ref_split: str = "loc_val"  # empty: skip
    max_questions: int = 0  # per split; 0 = all
    batch_size: int = 128
    features_storage: Literal["page_cache", "device"] = "page_cache"  # as train's
    device: Literal["auto", "cpu", "cuda"] = "auto"
    faithfulness: bool = True  # needs the scenes file of the split (skipped when absent)
    metrics_path: str = "metrics/evaluate.json"  # every figure (per type, family, step, module)
    headline_path: str = "metrics/evaluate_headline.json"  # the few DVC shows (dvc metrics show)
    comparison_path: str = "metrics/paper_comparison.json"
    comparison_markdown: str = "reports/paper_comparison.md"
    question_only_baseline: bool = False  # train and score the blind baseline (VQA models)
    baseline_train_split: str = "train"
    baseline_iterations: int = 1000  # ~3 epochs of mini-CLEVR train at batch 64
    baseline_batch_size: int = 64
    baseline_learning_rate: float = 1e-3
    mlflow_run_id: str = ""  # empty: the run model.pt records (the one that trained it)
    seed: int = 0

    def __post_init__(self) -> None:
        minimum = {"batch_size": 1, "baseline_iterations": 1, "baseline_batch_size": 1}
        check_at_least("evaluate", self, minimum | {"max_questions": 0})
        check_positive("evaluate", self, ("baseline_learning_rate",))
        if not (self.vqa_split or self.ref_split):
            raise ConfigError("evaluate.vqa_split/ref_split: name at least one split")


@dataclass(frozen=True)
class ReportConfig:
    """The step-by-step visual report and the plots (pipeline/report/page.py)."""

    model_path: str = "models/model.pt"
    tokens_dir: str = "data/tokens"
    features_dir: str = "data/features"
    images_dir: str = "data/mini-clevr/images"  # images/{split}/<image_filename>
    curve_path: str = "models/train_curve.csv"  # written by the train stage
    metrics_path: str = "metrics/evaluate.json"  # written by the evaluate stage
    output_dir: str = "reports/visualize"  # index.html and examples/*.png
    plots_dir: str = "reports/plots"  # PNG plots (DVC plots) and their CSV data
    vqa_split: str = "val"
    ref_split: str = "loc_val"
    num_examples: int = 8  # per task; half answered right, half wrong when both exist
    candidates: int = 256  # questions scored to pick the examples from
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least("report", self, {"num_examples": 1, "candidates": 1})


# The paper's six settings (pipeline/evaluation/paper.py SETTING_NAMES): task × expert layouts.
PAPER_SETTINGS = (
    "vqa_gt_layout",
    "vqa_scratch",
    "loc_gt_layout",
    "loc_scratch",
    "joint_gt_layout",
    "joint_scratch",
)


@dataclass(frozen=True)
class PaperTableConfig:
    """`snmn paper-table`: the paper's settings trained and evaluated one after another
    (pipeline/evaluation/paper_table.py); each from-scratch setting `seeds` times."""

    seeds: int = 3  # runs of each *_scratch setting (train.seed 1..seeds); *_gt_layout: one run
    output_dir: str = "runs/paper-table"  # <name>/models, <name>/checkpoints, <name>/evaluate.json
    table_path: str = "reports/paper_table.md"
    mlflow_experiment: str = "snmn-paper-table"  # every configuration's run, and the summary run
    settings: tuple[str, ...] = PAPER_SETTINGS  # which of the six to run

    def __post_init__(self) -> None:
        check_at_least("paper_table", self, {"seeds": 1})
        if not self.settings:
            raise ConfigError("paper_table.settings: must name at least one setting")
        for setting in self.settings:
            if setting not in PAPER_SETTINGS:
                raise ConfigError(
                    f"paper_table.settings: unknown setting {setting!r} "
                    f"(known: {', '.join(PAPER_SETTINGS)})"
                )
        if len(set(self.settings)) != len(self.settings):
            raise ConfigError("paper_table.settings: a setting is named twice")
        for name in ("output_dir", "table_path", "mlflow_experiment"):
            if not getattr(self, name):
                raise ConfigError(f"paper_table.{name}: must not be empty")


@dataclass(frozen=True)
class Config:
    """Everything in params.yaml."""

    generate: GenerateConfig = field(default_factory=GenerateConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    paper_table: PaperTableConfig = field(default_factory=PaperTableConfig)

    def __post_init__(self) -> None:
        check_model(self.model)
        check_dataset_counts(self.generate)

    def fingerprint(self) -> str:
        """Short stable hash of what shapes a training: the model and train sections.

        A checkpoint resumes only under the same fingerprint, so editing report.* or evaluate.*
        leaves a rerun of `snmn train` resuming; other data gives another run name (it also
        hashes the token and feature files).
        """
        text = json.dumps(
            {"model": to_dict(self.model), "train": to_dict(self.train)}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_model(model: ModelConfig) -> None:
    """Sizes of the network that snmn/config.py leaves unchecked: every width and count >= 1.

    `model.embed_dim: 0` would otherwise end in a ZeroDivisionError inside a Ray worker (the
    word embedding is drawn from N(0, 1/sqrt(embed_dim))). vocab_size and num_answers may be 0:
    they are then taken from the tokeniser's vocabularies.
    """
    sizes = {"num_steps": 1, "embed_dim": 1, "lstm_dim": 2, "feature_dim": 1}
    sizes |= {"feature_height": 1, "feature_width": 1, "pos_enc_dim": 4, "kb_dim": 1}
    sizes |= {"memory_dim": 1, "vqa_hidden_dim": 1, "vocab_size": 0, "num_answers": 0}
    check_at_least("model", model, sizes)
    check_positive("model", model, ("soft_pointer_temperature",))


def check_dataset_counts(generate: GenerateConfig) -> None:
    """A params.yaml run needs pictures and questions: a split of 0 images or 0 questions per
    image would leave empty files that tokenize and train trip over later.

    A split that is not wanted is left out of generate.num_images (the CLEVR-Ref splits reuse
    the pictures of train/val/test). Every split at 0 is the one exception: the real-CLEVR
    recipe (recipes/clevr-vqa.yaml) reads CLEVR v1.0 and generates nothing. The generator itself
    accepts 0 questions per image, for scenes-only datasets built in code (backbone tests).
    """
    counts = generate.num_images
    if not counts:
        raise ConfigError("generate.num_images: must give at least one split, e.g. {train: 2000}")
    if any(counts.values()):
        for split, count in counts.items():
            if count < 1:
                raise ConfigError(
                    f"generate.num_images.{split}: must be >= 1, got {count} (leave the split "
                    "out, or set every split to 0 to generate nothing, as for real CLEVR)"
                )
    check_at_least("generate", generate, {"questions_per_image": 1})


# ---------------------------------------------------------------------------------------------
# Strict construction from plain data
# ---------------------------------------------------------------------------------------------


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read params.yaml into a Config; a missing, empty, binary or malformed file, a key given
    twice or a bad value raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
            "params must be a YAML file like params.yaml"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        raw = yaml.load(text, Loader=StrictLoader)  # a SafeLoader: builds plain data only
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    if raw is None:
        raise ConfigError(
            f"{path}: empty (no sections); an empty file would silently mean the code's "
            "defaults: write the values, as in params.yaml"
        )
    return from_dict(Config, raw, where=str(path))


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, at any depth.

    YAML requires keys to be unique, but PyYAML keeps the last value: a params file with two
    `train:` sections would silently lose every value of the first one.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        problem=f"key {key!r} given twice (lines {first_line[key]} and {line}); "
                        "keep one",
                        problem_mark=key_node.start_mark,
                    )
                first_line[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error below names it
                break
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line for a YAML error: line, column and what is wrong (PyYAML's text spans lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + " ".join(str(problem).split())


def from_dict(cls: type, raw: Any, where: str = "params") -> Any:
    """Build dataclass `cls` from `raw`, checking every key and type; errors name the key."""
    return _convert(cls, raw, key="", where=where)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a Config (tuples as lists): what crosses the Ray boundary."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} → {"train.lr": 1e-4} (for MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _fail(where: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {key or '<root>'}: {message}")


def _convert(tp: Any, value: Any, key: str, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _fail(where, key, f"expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - names)
        if unknown:
            raise _fail(
                where, _join(key, unknown[0]), f"unknown key (known: {', '.join(sorted(names))})"
            )
        kwargs = {
            name: _convert(hints[name], value[name], _join(key, name), where) for name in value
        }
        try:
            return tp(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as error:  # a section's own checks (__post_init__)
            raise ConfigError(f"{where}: {error}") from None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _convert(option, value, key, where)
            except ConfigError:
                continue
        raise _fail(where, key, f"expected {_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise _fail(where, key, f"expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(where, key, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(args) != len(value):
            raise _fail(where, key, f"expected {len(args)} items, got {len(value)}")
        return tuple(
            _convert(a, v, f"{key}[{i}]", where)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is list:
        if not isinstance(value, list):
            raise _fail(where, key, f"expected a list, got {value!r}")
        return [_convert(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, key, f"expected a mapping, got {value!r}")
        return {
            _convert(args[0], k, key, where): _convert(args[1], v, _join(key, str(k)), where)
            for k, v in value.items()
        }
    if tp is type(None):
        if value is not None:
            raise _fail(where, key, f"expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(where, key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, key, f"expected a string, got {value!r}")
        return value
    raise _fail(where, key, f"unsupported type {_name(tp)}")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)
