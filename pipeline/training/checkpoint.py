"""Directory checkpoints that make a resumed run continue exactly where it stopped.

Training on "What color is the large cube?" for 200k iterations gets interrupted: a node is
preempted, a worker is SIGKILLed. A checkpoint directory holds everything the next step depends
on — model, EMA copy, optimizer, step, the RNG states of every rank, the config and its
fingerprint — so that the loss after resuming equals the loss without the interruption. Only rank
0 writes; the other ranks' RNG states reach it through an all-gather. Files are plain tensors and
dicts, loaded with weights_only=True, and written atomically (a kill mid-save leaves no half
state.pt).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.tables import write_atomic

STATE_FILE = "state.pt"


@dataclass
class TrainingState:
    """What a checkpoint restores."""

    step: int  # iterations completed
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng_per_rank: list[dict[str, Any]]
    config: dict[str, Any]
    fingerprint: str
    history: list[dict[str, float]]  # the metrics logged so far (for the DVC plot)


def rng_state() -> dict[str, Any]:
    """This process's random states: torch (CPU and CUDA), numpy, python."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(state: TrainingState, directory: str | Path) -> Path:
    """Write `state` into `directory` (created); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "step": state.step,
        "model": state.model,
        "ema": state.ema,
        "optimizer": state.optimizer,
        "rng_per_rank": [_plain_rng(r) for r in state.rng_per_rank],
        "config": state.config,
        "fingerprint": state.fingerprint,
        "history": state.history,
    }
    write_atomic(directory / STATE_FILE, lambda temporary: torch.save(payload, temporary))
    return directory


def load(directory: str | Path) -> TrainingState:
    """Read a checkpoint directory written by `save`."""
    payload = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    payload["rng_per_rank"] = [_rng_from_plain(r) for r in payload["rng_per_rank"]]
    return TrainingState(**payload)


def _plain_rng(state: dict[str, Any]) -> dict[str, Any]:
    """RNG states as tensors, lists and numbers only (loadable with weights_only=True)."""
    kind, keys, position, has_gauss, cached = state["numpy"]
    version, internal, gauss = state["python"]
    plain = {
        "torch": state["torch"],
        "numpy": [
            kind,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            position,
            has_gauss,
            cached,
        ],
        "python": [version, list(internal), gauss],
    }
    if "cuda" in state:
        plain["cuda"] = list(state["cuda"])
    return plain


def _rng_from_plain(plain: dict[str, Any]) -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = plain["numpy"]
    version, internal, gauss = plain["python"]
    state = {
        "torch": plain["torch"],
        "numpy": (kind, keys.numpy().astype(np.uint32), position, has_gauss, cached),
        "python": (version, tuple(internal), gauss),
    }
    if "cuda" in plain:
        state["cuda"] = plain["cuda"]
    return state
