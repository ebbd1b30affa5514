"""Products against the knowledge base that all T steps make, with one gradient product for all.

"Is there a cube left of the red sphere?" pools kb under the stack's top map at every step
(DescribeOne reads x(a_top) = softmax(a_top)ᵀ kb) and Transform multiplies kb and kb² by a query
that depends on the stack (docs/model.md, "Exact rewrites"). Each such product is small, [B,K,X] ×
[B,X,Y] with K = 1 or 2, and its gradient with respect to the shared operand is an outer product
(leftᵀ · grad, inner size K) that a batched GEMM computes at a small fraction of its usual speed
on a CPU; summed over 9 steps, forward and backward, those outer products were most of a
training step.

Here the loop's products leave their (left, grad) pairs with the shared operand instead, and the
operand's gradient is formed once, after every step's backward has run, as one product with
inner size ΣK = T·K:

    d operand = Σ_t left_tᵀ · grad_t = [left_1 … left_T]ᵀ · [grad_1 … grad_T]

The numbers are those of the per-step formulation up to the order of summation (tested); the
gradient with respect to each `left` is computed as usual. Autograd runs a node only after every
node that reads its output, so the operand's node sees all pairs.

Shape legend: B batch, K rows of one product, X shared rows, Y shared columns.
"""

from __future__ import annotations

import torch
from torch import Tensor


class SharedOperand:
    """`tensor` [B, X, Y] as read by the step loop: `left_product(left)` = left @ tensor."""

    def __init__(self, tensor: Tensor) -> None:
        self._pending = _PendingGradient()
        self.tensor = _Collect.apply(tensor, self._pending) if tensor.requires_grad else tensor

    def left_product(self, left: Tensor) -> Tensor:
        """left [B, K, X] → left @ tensor [B, K, Y]."""
        if not self.tensor.requires_grad:
            return torch.bmm(left, self.tensor)
        return _Product.apply(left, self.tensor, self._pending)


class _PendingGradient:
    """The (left, grad) pairs of one operand's products, left by their backward.

    The autograd nodes keep this, never the operand: a node that kept the operand would close a
    cycle (operand → tensor → its grad_fn → operand) that passes through C++ and that Python's
    garbage collector cannot see, and every training step's kb and graph would stay in memory.
    """

    def __init__(self) -> None:
        self._lefts: list[Tensor] = []  # [B, K, X] each, appended during backward
        self._grads: list[Tensor] = []  # [B, K, Y] each

    def defer(self, left: Tensor, grad: Tensor) -> None:
        self._lefts.append(left)
        self._grads.append(grad)

    def gradient(self) -> Tensor | None:
        """Σ left_tᵀ grad_t as one product ([B, X, ΣK] × [B, ΣK, Y]); forgets the pairs."""
        if not self._lefts:
            return None
        lefts = torch.cat(self._lefts, dim=1).transpose(1, 2).contiguous()  # [B, X, ΣK]
        grads = torch.cat(self._grads, dim=1)  # [B, ΣK, Y]
        self._lefts, self._grads = [], []
        return torch.bmm(lefts, grads)


class _Collect(torch.autograd.Function):
    """Identity in the forward; in the backward adds the deferred gradient of every product."""

    @staticmethod
    def forward(ctx, tensor: Tensor, pending: _PendingGradient) -> Tensor:
        ctx.pending = pending
        ctx.set_materialize_grads(False)
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor | None) -> tuple[Tensor | None, None]:
        deferred = ctx.pending.gradient()
        if grad is None:
            return deferred, None
        return (grad if deferred is None else grad + deferred), None


class _Product(torch.autograd.Function):
    """left @ tensor; the tensor's gradient is left with `pending`, not returned."""

    @staticmethod
    def forward(ctx, left: Tensor, tensor: Tensor, pending: _PendingGradient) -> Tensor:
        ctx.save_for_backward(left, tensor)
        ctx.pending = pending
        return torch.bmm(left, tensor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:
        left, tensor = ctx.saved_tensors
        ctx.pending.defer(left, grad)
        grad_left = None
        if ctx.needs_input_grad[0]:
            grad_left = torch.bmm(grad, tensor.transpose(1, 2))  # [B, K, X]
        return grad_left, None, None
