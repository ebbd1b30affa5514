"""Boxes on the feature grid: encode a GT box as (cell, offsets), decode it back, IoU.

"The large cube left of the red sphere" has a GT box [x, y, w, h] in 480×320 pixels. The
model scores the 14×14 cells and regresses 4 offsets at a cell, so training needs the target
cell (the rounded box centre in grid coordinates) and the offsets of the box corners from that
cell, in grid units; prediction inverts that (official util/boxes.py, docs/model.md "Output heads"):

    x2 = x1 + w - 1                              (+1 pixel convention)
    grid = pixel / stride - 0.5                  stride = 480/14 across, 320/14 down
    cell = round(centre), clamped to the grid    (round half to even, as Python's round)
    offsets = (x1 - xc, y1 - yc, x2 - xc, y2 - yc)

Functions take tensors or array-likes, work on any leading shape [..., 4] and compute in
float64 so that encode → decode returns the box to floating-point precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BoxGrid:
    """The feature grid laid over the image."""

    grid_height: int = 14
    grid_width: int = 14
    image_height: int = 320
    image_width: int = 480

    @property
    def stride_y(self) -> float:
        return self.image_height / self.grid_height

    @property
    def stride_x(self) -> float:
        return self.image_width / self.grid_width


def _as_float64(values) -> Tensor:
    return torch.as_tensor(values).to(torch.float64)


def encode_boxes(boxes, grid: BoxGrid) -> tuple[Tensor, Tensor]:
    """GT boxes [..., 4] (x, y, w, h pixels) → (cells [...] int64, offsets [..., 4] float64)."""
    x1, y1, w, h = _as_float64(boxes).unbind(-1)
    x2, y2 = x1 + w - 1, y1 + h - 1
    gx1, gx2 = x1 / grid.stride_x - 0.5, x2 / grid.stride_x - 0.5
    gy1, gy2 = y1 / grid.stride_y - 0.5, y2 / grid.stride_y - 0.5
    xc = torch.round((gx1 + gx2) / 2).clamp(0, grid.grid_width - 1)
    yc = torch.round((gy1 + gy2) / 2).clamp(0, grid.grid_height - 1)
    cells = (yc * grid.grid_width + xc).to(torch.int64)
    offsets = torch.stack([gx1 - xc, gy1 - yc, gx2 - xc, gy2 - yc], dim=-1)
    return cells, offsets


def decode_boxes(cells, offsets, grid: BoxGrid) -> Tensor:
    """(cells [...], offsets [..., 4] grid units) → boxes [..., 4] (x, y, w, h pixels)."""
    cells = torch.as_tensor(cells).to(torch.int64)
    xc = (cells % grid.grid_width).to(torch.float64)
    yc = torch.div(cells, grid.grid_width, rounding_mode="floor").to(torch.float64)
    ox1, oy1, ox2, oy2 = _as_float64(offsets).unbind(-1)
    x1 = (xc + ox1 + 0.5) * grid.stride_x
    y1 = (yc + oy1 + 0.5) * grid.stride_y
    x2 = (xc + ox2 + 0.5) * grid.stride_x
    y2 = (yc + oy2 + 0.5) * grid.stride_y
    return torch.stack([x1, y1, x2 - x1 + 1, y2 - y1 + 1], dim=-1)


def predict_boxes(cell_scores: Tensor, box_offsets: Tensor, grid: BoxGrid) -> Tensor:
    """The REF head's box: the best cell's offsets decoded ([B, N], [B, N, 4] → [B, 4])."""
    cells = cell_scores.argmax(dim=1)  # [B]
    offsets = box_offsets.gather(1, cells.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
    return decode_boxes(cells, offsets.detach(), grid)


def box_iou(boxes_a, boxes_b) -> Tensor:
    """IoU of boxes [..., 4] (x, y, w, h) with the +1 pixel convention (x2 = x + w - 1)."""
    ax1, ay1, aw, ah = _as_float64(boxes_a).unbind(-1)
    bx1, by1, bw, bh = _as_float64(boxes_b).unbind(-1)
    ax2, ay2 = ax1 + aw - 1, ay1 + ah - 1
    bx2, by2 = bx1 + bw - 1, by1 + bh - 1
    inter_w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1) + 1).clamp_min(0)
    inter_h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1) + 1).clamp_min(0)
    intersection = inter_w * inter_h
    union = aw * ah + bw * bh - intersection
    return intersection / union
