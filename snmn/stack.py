"""The differentiable stack of attention maps (docs/model.md, "Differentiable stack").

"Are there more cubes than spheres?" runs Find[cubes], Find[spheres], DescribeTwo: the first Find
pushes a map of the cubes, the second pushes the spheres on top, DescribeTwo reads both. The
stack A holds L maps of raw attention *logits* (softmax is applied only when a module pools kb
features, `attended_features`); the pointer p is a distribution over the L slots, one-hot in
practice, starting at slot 0 (an empty-bottom sentinel).

    push: p'[i] = p[i-1]        pop: p'[i] = p[i+1]
    read: a = Σ_i A_i p_i       write: A := a·p + A·(1-p)

With the guard (official GUARD_STACK_PTR, on in every CLEVR config) a pointer already at the top
(push) or at the bottom (pop) stays where it is instead of falling off.

Shape legend: B batch, N = H·W grid cells, L stack slots, D kb channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class StackState:
    """What flows from one step to the next."""

    stack: Tensor  # [B, N, L] attention logits
    pointer: Tensor  # [B, L]
    memory: Tensor  # [B, Dm]


def initial_state(batch: int, cells: int, length: int, memory_dim: int, like: Tensor) -> StackState:
    """Zero stack and memory, pointer one-hot at slot 0."""
    pointer = torch.zeros(batch, length, dtype=like.dtype, device=like.device)
    pointer[:, 0] = 1.0
    return StackState(
        stack=like.new_zeros(batch, cells, length),
        pointer=pointer,
        memory=like.new_zeros(batch, memory_dim),
    )


def push(pointer: Tensor, guard: bool = True) -> Tensor:
    """Move the pointer one slot up: p'[i] = p[i-1] ([B, L] → [B, L])."""
    moved = F.pad(pointer[:, :-1], (1, 0))
    if guard:
        moved = moved + F.pad(pointer[:, -1:], (pointer.shape[1] - 1, 0))  # top stays
    return moved


def pop(pointer: Tensor, guard: bool = True) -> Tensor:
    """Move the pointer one slot down: p'[i] = p[i+1] ([B, L] → [B, L])."""
    moved = F.pad(pointer[:, 1:], (0, 1))
    if guard:
        moved = moved + F.pad(pointer[:, :1], (0, pointer.shape[1] - 1))  # bottom stays
    return moved


def read(stack: Tensor, pointer: Tensor) -> Tensor:
    """The map at the pointer: Σ_i A_i p_i ([B, N, L], [B, L] → [B, N]).

    A broadcast product and a sum rather than a batched matrix-vector product: the backward of
    the latter is an outer product that batched GEMM computes slowly on a CPU.
    """
    return (stack * pointer.unsqueeze(1)).sum(dim=2)


def write(stack: Tensor, pointer: Tensor, value: Tensor) -> Tensor:
    """Write map `value` [B, N] at the pointer: A·(1-p) + a·p."""
    slot = pointer.unsqueeze(1)  # [B, 1, L]
    return stack * (1.0 - slot) + value.unsqueeze(2) * slot


def attended_features(kb: Tensor, logits: Tensor) -> Tensor:
    """x(a) = Σ_n softmax_n(a) kb_n: one [B, K, N] × [B, N, D] product for K maps [B, K, N]."""
    return torch.bmm(logits.softmax(dim=-1), kb)  # [B, K, D]


def sharpen(pointer: Tensor, mode: str, temperature: float) -> Tensor:
    """One-hot argmax (hard, no gradient) or softmax(p / temperature) (soft)."""
    if mode == "hard":
        return one_hot_argmax(pointer)
    return (pointer / temperature).softmax(dim=1)


def one_hot_argmax(scores: Tensor) -> Tensor:
    """One-hot of the argmax over the last axis, same dtype ([..., K] → [..., K]).

    A comparison rather than F.one_hot, whose range check syncs a CUDA device.
    """
    positions = torch.arange(scores.shape[-1], device=scores.device)
    return (positions == scores.argmax(dim=-1, keepdim=True)).to(scores.dtype)
