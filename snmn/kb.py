"""Knowledge base: image features + positional encoding → two 1×1 convs → kb [B, H, W, 512].

For "What is the color of the cube left of the sphere?" a Transform must know where cells lie,
so each 1024-d ResNet cell is concatenated with a 128-d sin/cos code of its row and column
before the convs (official input_unit.build_kb_batch). 1×1 convs over channels-last maps are
Linear layers on the last axis.

Shape legend: B batch, H×W grid, C feature channels, P positional channels, D kb channels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def positional_encoding(height: int, width: int, dim: int) -> Tensor:
    """[H, W, P] = (sin h, cos h, sin w, cos w) with periods 10000**linspace(0, 1, P/4)."""
    periods = 10000.0 ** np.linspace(0.0, 1.0, dim // 4)  # [P/4]
    rows = np.arange(height, dtype=np.float64)[:, None, None] / periods  # [H, 1, P/4]
    cols = np.arange(width, dtype=np.float64)[None, :, None] / periods  # [1, W, P/4]
    rows = np.broadcast_to(rows, (height, width, dim // 4))
    cols = np.broadcast_to(cols, (height, width, dim // 4))
    code = np.concatenate([np.sin(rows), np.cos(rows), np.sin(cols), np.cos(cols)], axis=-1)
    return torch.from_numpy(code.astype(np.float32))


def xavier_linear(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    """A Linear (or 1×1 conv) initialised like the official fc/conv layers: Glorot, zero bias."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class KnowledgeBase(nn.Module):
    """conv1x1 (C+P → D) → ELU → conv1x1 (D → D), over [features ; positional code].

    The order [features ; code] matches the official concat, so conv1's weight columns are
    (feature channels, then the 128 code channels).
    """

    def __init__(
        self, feature_dim: int, pos_enc_dim: int, kb_dim: int, height: int, width: int
    ) -> None:
        super().__init__()
        self.register_buffer(
            "position", positional_encoding(height, width, pos_enc_dim), persistent=False
        )  # [H, W, P]
        self.conv1 = xavier_linear(feature_dim + pos_enc_dim, kb_dim)
        self.conv2 = xavier_linear(kb_dim, kb_dim)

    def forward(self, features: Tensor) -> Tensor:
        """features [B, H, W, C] (any float dtype, as stored) → kb [B, H, W, D].

        conv1([x ; pe]) is computed as W_x x + (W_pe pe + b): the same numbers without
        concatenating, and the positional half once per call instead of once per image.
        """
        if features.shape[1:3] != self.position.shape[:2]:
            raise ValueError(
                f"image features have grid {tuple(features.shape[1:3])}, "
                f"the model expects {tuple(self.position.shape[:2])}"
            )
        features = features.to(self.conv1.weight.dtype)
        feature_weight, position_weight = self.conv1.weight.split(
            [features.shape[-1], self.position.shape[-1]], dim=1
        )
        position = self.position.to(features.dtype)
        position_term = nn.functional.linear(
            position, position_weight, self.conv1.bias
        )  # [H, W, D]
        hidden = nn.functional.linear(features, feature_weight) + position_term  # [B, H, W, D]
        return self.conv2(nn.functional.elu(hidden))  # [B, H, W, D]
