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
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config, flatten, to_dict
from pipeline.tables import write_atomic, write_json_atomic
from pipeline.text import Vocabulary, load_question_vocabulary
from pipeline.tracking import Tracker
from snmn.config import ModelConfig
from snmn.model import SNMN

MODEL_FILE = "model.pt"
METRICS_FILE = "train_metrics.json"
CURVE_FILE = "train_curve.csv"


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
    }
    write_atomic(output / MODEL_FILE, lambda temporary: torch.save(payload, temporary))
    final = dict(history[-1]) if history else {}
    write_json_atomic(final, output / METRICS_FILE)
    write_atomic(output / CURVE_FILE, lambda temporary: temporary.write_text(_curve_csv(history)))
    for name in (MODEL_FILE, METRICS_FILE, CURVE_FILE):
        tracker.log_artifact(output / name, folder="training")
    tracker.log_text(json.dumps(flatten(to_dict(config)), indent=2), "training/params.json")
    tracker.log_model(ema_model.cpu(), name="model")


def load_trained_model(path: str | Path, device: str = "cpu") -> tuple[SNMN, dict[str, Any]]:
    """(EMA model in eval mode, the payload) from a model.pt written above."""
    payload = torch.load(Path(path), map_location=device, weights_only=True)
    model = SNMN(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload


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
