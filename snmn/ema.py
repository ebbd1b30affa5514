"""Exponential moving average of the weights, used for evaluation (official EMV_DECAY 0.999).

After 200k iterations on "What color is the large cube?" and its 700k siblings the reported
accuracy comes from the averaged weights, not the last ones. The average starts as an exact
copy of the model (the official tf.train.ExponentialMovingAverage does the same; the public
PyTorch port started it from different random weights) and is updated after every optimizer
step with one fused lerp over all tensors: ema ← ema + (1 - decay) · (model - ema).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Holds `average`, a frozen copy of the model whose weights track the model's."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.average = copy.deepcopy(model).eval()
        self.average.requires_grad_(False)
        self._average_tensors = self._floating_tensors(self.average)

    @staticmethod
    def _floating_tensors(model: nn.Module) -> list[torch.Tensor]:
        tensors = list(model.parameters()) + list(model.buffers())
        return [t for t in tensors if t.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards `model` (the same architecture, unwrapped from DDP/compile)."""
        current = [t.detach() for t in self._floating_tensors(model)]
        if len(current) != len(self._average_tensors):
            raise ValueError("ModelEMA.update: model does not match the averaged copy")
        torch._foreach_lerp_(self._average_tensors, current, 1.0 - self.decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "average": self.average.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.average.load_state_dict(state["average"])
