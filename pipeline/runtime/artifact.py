"""What a finished training leaves behind for DVC, MLflow and the later stages.

After SNMN has learnt to answer "What shape is the small rubber thing?", the evaluation stage,
the report and the demo need the EMA weights, the exact ModelConfig and the vocabularies; DVC
needs a metrics JSON and a training-curve CSV; MLflow gets the same files as artifacts and the
model as a logged PyTorch model. The model file holds tensors, strings and numbers only, so it
loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config, flatten, to_dict
from pipeline.data.schema import tokens_metadata
from pipeline.data.text import Vocabulary, load_question_vocabulary
from pipeline.errors import ConfigError, DataError
from pipeline.tables import write_atomic, write_json_atomic
from pipeline.tracking import Tracker
from snmn.config import ModelConfig
from snmn.model import SNMN

MODEL_FILE = "model.pt"
METRICS_FILE = "train_metrics.json"
CURVE_FILE = "train_curve.csv"
# what the later stages read from model.pt ("config", "fingerprint", "mlflow" are optional)
MODEL_KEYS = ("model_config", "state_dict", "question_words", "answer_words")


def write_training_outputs(
    config: Config,
    model_config: ModelConfig,
    ema_model: SNMN,
    history: list[dict[str, float]],
    tracker: Tracker,
    tracking: dict[str, str],
) -> None:
    """model.pt, train_metrics.json and train_curve.csv in train.output_dir, and to MLflow."""
    output = Path(config.train.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tokens = Path(config.train.tokens_dir)
    payload = {
        "model_config": dataclasses.asdict(model_config),
        "state_dict": {k: v.detach().cpu() for k, v in ema_model.state_dict().items()},
        "question_words": list(load_question_vocabulary(tokens / "vocab_question.json").words),
        "answer_words": list(Vocabulary.load(tokens / "vocab_answer.json").words),
        "config": to_dict(config),
        "fingerprint": config.fingerprint(),
        "mlflow": dict(tracking),  # tracking_uri and run_id of the training, when tracked
        "training_data": training_data(config),
    }
    write_atomic(output / MODEL_FILE, lambda temporary: torch.save(payload, temporary))
    final = dict(history[-1]) if history else {}
    write_json_atomic(final, output / METRICS_FILE)
    write_atomic(output / CURVE_FILE, lambda temporary: temporary.write_text(_curve_csv(history)))
    for name in (MODEL_FILE, METRICS_FILE, CURVE_FILE):
        tracker.log_artifact(output / name, folder="training")
    tracker.log_text(json.dumps(flatten(to_dict(config)), indent=2), "training/params.json")
    tracker.log_model(ema_model.cpu(), name="model")


def training_data(config: Config) -> dict[str, Any]:
    """What the model learns from, for the evaluation's comparability note: the questions'
    dataset version ("mini-CLEVR ..." or CLEVR's "1.0"), the split and the iterations."""
    train = config.train
    split = train.ref_train_split if config.model.task == "ref" else train.vqa_train_split
    metadata = tokens_metadata(Path(train.tokens_dir) / f"{split}.parquet")
    return {
        "dataset_version": metadata.get("dataset_version"),
        "split": split,
        "iterations": train.iterations,
    }


def load_trained_model(path: str | Path, device: str = "cpu") -> tuple[SNMN, dict[str, Any]]:
    """(EMA model in eval mode, the payload) from a model.pt written above.

    Every way the file can be wrong is one DataError line naming it: missing, empty, truncated or
    not a torch file, pickled objects that weights_only refuses, keys missing, a model_config
    that builds no SNMN, a state_dict whose tensors do not fit that config ("text_encoder.
    embedding.weight: [3, 3] in the file, [10, 32] in the model"), vocabularies of another size.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise DataError(f"{path}: model file {what} (run `snmn train`, or point to its model.pt)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty model file (0 bytes); run `snmn train` again")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, its index at the end
        raise DataError(
            f"{path}: truncated or not a torch file (no zip archive index, which torch.save "
            f"writes last); run `snmn train` again"
        )
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only met a class or function to import
        named = re.search(r"GLOBAL (\S+)", str(error))
        raise DataError(
            f"{path}: refused: it holds Python objects other than tensors, numbers and strings"
            f"{f' ({named[1]})' if named else ''}; not a model.pt of `snmn train`"
        ) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError... on bad bytes
        raise DataError(
            f"{path}: damaged torch file (torch.load: {type(error).__name__}: "
            f"{first_line(error).split('. ')[0]}); run `snmn train` again"
        ) from None
    missing = [key for key in MODEL_KEYS if not isinstance(payload, dict) or key not in payload]
    if missing:
        holds = f"keys {sorted(map(str, payload))[:8]}" if isinstance(payload, dict) else "no dict"
        raise DataError(
            f"{path}: not a model.pt of `snmn train`: missing keys {missing} (it holds {holds})"
        )
    try:
        model = SNMN(ModelConfig(**payload["model_config"]))
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: model_config builds no SNMN: {first_line(error)}") from None
    state = payload["state_dict"]
    problem = _misfit(model.state_dict(), state) if isinstance(state, dict) else "not a dict"
    if problem:
        raise DataError(f"{path}: state_dict does not fit its model_config: {problem}")
    model.load_state_dict(state)
    config = model.config
    sizes = {"question_words": config.vocab_size}
    if config.builds_vqa:
        sizes["answer_words"] = config.num_answers
    for key, size in sizes.items():
        words = payload[key]
        if not isinstance(words, list) or len(words) != size:
            count = len(words) if isinstance(words, list) else type(words).__name__
            raise DataError(f"{path}: {key} has {count} words, its model_config {size}")
    return model.to(device).eval(), payload


def load_model(model_path: str | Path, tokens_dir: str | Path, device: torch.device):
    """(EMA model, payload) of model.pt, checked against the tokeniser's vocabularies."""
    model, payload = load_trained_model(model_path, str(device))
    tokens = Path(tokens_dir)
    words = list(load_question_vocabulary(tokens / "vocab_question.json").words)
    answers = list(Vocabulary.load(tokens / "vocab_answer.json").words)
    if words != payload["question_words"] or answers != payload["answer_words"]:
        raise ConfigError(
            f"{model_path}: the model was trained with other vocabularies than those in {tokens}"
        )
    return model, payload


def _misfit(expected: dict[str, torch.Tensor], given: dict[str, Any]) -> str:
    """What keeps `given` from loading where `expected` is the model's state ("" if nothing)."""
    shown = 3
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    wrong = [
        f"{key}: {_shape(given[key])} in the file, {list(expected[key].shape)} in the model"
        for key in expected
        if key in given and _shape(given[key]) != list(expected[key].shape)
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
            problems.append(f"{len(keys)} {label} ({'; '.join(map(str, keys[:shown]))}{more})")
    return ", ".join(problems)


def _shape(value: Any) -> list[int] | str:
    return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def first_line(error: BaseException) -> str:
    """The first line of an error's message (at most 200 characters), for one-line errors."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _curve_csv(history: list[dict[str, float]]) -> str:
    columns = sorted({key for row in history for key in row} - {"step"})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["step", *columns])
    for row in history:
        writer.writerow([int(row["step"]), *(_cell(row.get(c)) for c in columns)])
    return buffer.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
