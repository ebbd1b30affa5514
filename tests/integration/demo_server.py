"""Helpers of the demo tests: a tiny trained model and the settings to serve it on loopback.

The tests run the server with pipeline.demo.app.server_process: `python -m pipeline.demo.app`, the
same `serve()` that the `snmn serve` stage calls, in its own process on a free port.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.config import ServeConfig
from pipeline.demo.app import free_port
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from tests.conftest import tiny_config


def train_tiny_model(tiny_data: Path, work: Path, task: str = "vqa") -> Path:
    """model.pt of 40 iterations on the tiny set (seconds): enough, with a short EMA, for the
    controller to follow the expert layouts ("more cubes than spheres": Find, Find,
    DescribeTwo, then NoOp), so that NoOp steps get folded."""
    config = tiny_config(
        tiny_data,
        work,
        model={"task": task},
        iterations=40,
        learning_rate=3e-3,
        ema_decay=0.5,
        log_every=40,
        eval_every=40,
        checkpoint_every=40,
    )
    train_loop(config, WorkerContext(), LocalReporter(work / "checkpoints"), {})
    return work / "models" / "model.pt"


def demo_settings(tiny_data: Path, model: Path | str, split: str = "val", **changes: Any):
    """ServeConfig over the tiny set, one torch thread."""
    settings = ServeConfig(
        model=str(model),
        features_dir=str(tiny_data / "features"),
        images_dir=str(tiny_data / "mini-clevr" / "images"),
        tokens_dir=str(tiny_data / "tokens"),
        split=split,
        port=free_port(),
        torch_threads=1,
    )
    return dataclasses.replace(settings, **changes)
