"""Shared fixtures: a tiny mini-CLEVR run through the real stages, and a small model profile.

The session-scoped `tiny_data` folder is made once by the same functions `dvc repro` calls:
generate (a few dozen scenes) → tokenize → extract (ResNet-18, 64×64 input → 4×4 grid).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.clevr.readers import Question, check_image_file
from pipeline.config import (
    Config,
    ExtractConfig,
    GenerateConfig,
    TokenizeConfig,
    from_dict,
)
from pipeline.vision.images import image_name

REPO = Path(__file__).resolve().parents[1]


def shared_sample(name: str) -> Path:
    """A folder of real CLEVR v1.0 files in the shared/ folder laid beside the checkout (and
    CI's clone), or at /work/shared; the first of those paths when neither exists."""
    candidates = (REPO.parent / "shared" / name, Path("/work/shared") / name)
    return next((path for path in candidates if path.is_dir()), candidates[0])


REAL_CLEVR_SAMPLE = shared_sample("real_clevr_sample")  # 10 test images and their questions
# 100 real CLEVR v1.0 train images with indices 0..383 and gaps, and their scenes (a subset).
REAL_CLEVR_TRAIN_SAMPLE = shared_sample("real_clevr_train_sample")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the snmn command sets it (stages/cli.py)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

TINY_GRID = 4  # 64×64 input → 4×4 conv4 grid
TINY_MODEL = {
    "feature_dim": 256,
    "feature_height": TINY_GRID,
    "feature_width": TINY_GRID,
    "embed_dim": 32,
    "lstm_dim": 64,
    "kb_dim": 64,
    "memory_dim": 64,
    "pos_enc_dim": 16,
    "vqa_hidden_dim": 64,
    "vocab_size": 0,
    "num_answers": 0,
}


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one thread is faster, and immune to a busy shared box; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def generate_scenes(root: Path, train: int, val: int) -> Path:
    """mini-CLEVR images and scenes (no questions) of `train` and `val` images in root."""
    from pipeline.minclevr.generate import generate

    generate(
        GenerateConfig(
            output_dir=str(root),
            num_images={"train": train, "val": val, "test": 0},
            questions_per_image=0,
            refexps_per_image=0,
            workers=1,
        )
    )
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with mini-clevr/, tokens/ and features/ for VQA and CLEVR-Ref splits."""
    from pipeline.data.tokenization import tokenize
    from pipeline.minclevr.generate import generate
    from pipeline.vision.features import extract_features

    root = tmp_path_factory.mktemp("tiny")
    generate(
        GenerateConfig(
            output_dir=str(root / "mini-clevr"),
            num_images={"train": 40, "val": 16, "test": 4},
            questions_per_image=4,
            refexps_per_image=2,
            workers=1,
        )
    )
    tokenize(
        TokenizeConfig(
            questions_dir=str(root / "mini-clevr" / "questions"),
            output_dir=str(root / "tokens"),
            summary_path=str(root / "tokenize.json"),
            ref_splits=("loc_train", "loc_val"),
        ),
        num_steps=9,
        grid=(TINY_GRID, TINY_GRID),
    )
    extract_features(
        ExtractConfig(
            images_dir=str(root / "mini-clevr" / "images"),
            output_dir=str(root / "features"),
            splits=("train", "val", "loc_train", "loc_val"),
            backbone="resnet18",
            input_height=64,
            input_width=64,
            shard_size=32,
            decode_workers=0,
            calibration_images=16,
        )
    )
    return root


def tiny_config(
    root: Path, work: Path, model: dict[str, Any] | None = None, **train: Any
) -> Config:
    """A Config over `tiny_data` with the tiny model; `train` overrides train.* values."""
    values = {
        "tokens_dir": str(root / "tokens"),
        "features_dir": str(root / "features"),
        "output_dir": str(work / "models"),
        "runs_dir": str(work / "runs"),
        "batch_size": 8,
        "iterations": 6,
        "log_every": 1,
        "eval_every": 3,
        "checkpoint_every": 3,
        "torch_threads": 1,
        "mlflow_tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        **train,
    }
    return from_dict(
        Config,
        {"model": {**TINY_MODEL, **(model or {})}, "train": values},
        where="tiny_config",
    )


def write_pngs(
    root: Path, split: str, count: int, size: tuple[int, int] = (80, 60), seed: int = 0
) -> Path:
    """`count` random RGB PNGs of `size` (width, height) in root/images/split/, CLEVR-named."""
    folder = root / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / image_name(split, index))
    return folder


def check_images(images_dir: str | Path, questions: list[Question]) -> int:
    """Check every image the questions refer to (once each: it exists, is a PNG, carries its
    index in its name, and no two questions give it different indices); how many were checked."""
    seen: dict[str, int] = {}
    for question in questions:
        known = seen.get(question.image_filename)
        if known is None:
            check_image_file(Path(images_dir) / question.image_filename, question.image_index)
            seen[question.image_filename] = question.image_index
        else:
            assert known == question.image_index, (
                f"{images_dir}: question {question.index}: {question.image_filename} has "
                f"image_index {question.image_index} here and {known} elsewhere"
            )
    return len(seen)


def tiny_extract_config(root: Path, **changes: Any) -> ExtractConfig:
    """resnet18 at 64×64 (4×4×256 features), shards of 2 images, decoding in-process."""
    config = ExtractConfig(
        images_dir=str(root / "images"),
        output_dir=str(root / "features"),
        splits=("train",),
        backbone="resnet18",
        input_height=64,
        input_width=64,
        shard_size=2,
        batch_size=2,
        decode_workers=0,
        calibration_images=4,
    )
    return dataclasses.replace(config, **changes)


def run_snmn(*arguments: str, cwd: Path = REPO, **options: Any) -> subprocess.CompletedProcess:
    """`snmn <arguments>` in a fresh interpreter (python -m stages.cli), output captured as text."""
    options.setdefault("timeout", 300)
    command = [sys.executable, "-m", "stages.cli", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, **options)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a command refused for bad input (exit status 2)."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]
