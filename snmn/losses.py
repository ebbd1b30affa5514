"""Training losses and the weight-decay parameter split (docs/model.md, "Losses and optimisation").

For "What color is the large cube?" with expert layout Find, DescribeOne, NoOp×7 the VQA loss
is the answer cross-entropy plus the layout cross-entropy over all 9 steps; for the referring
expression "the large cube" the REF loss is the cross-entropy of the target cell among the
14×14 cells plus the squared error of the 4 box offsets predicted at that cell. Runs without
layouts add the entropy of w_t, ramped in late (official train_net_*.py, util/losses.py).

Shape legend: B batch, T steps, M modules, N cells, A answers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snmn.model import SNMNOutput

ENTROPY_FLOOR = 1e-5  # official sharpen_loss: log(max(w, 1e-5))


def answer_loss(answer_logits: Tensor, answers: Tensor) -> Tensor:
    """Mean cross-entropy of the answer ([B, A], [B])."""
    return F.cross_entropy(answer_logits, answers)


def layout_loss(module_logits: Tensor, layouts: Tensor) -> Tensor:
    """Mean cross-entropy over all B·T steps against the NoOp-padded expert layout [B, T]."""
    return F.cross_entropy(module_logits.flatten(0, 1), layouts.flatten())


def cell_loss(cell_scores: Tensor, target_cells: Tensor) -> Tensor:
    """Mean cross-entropy of the target cell among the H·W cells ([B, N], [B])."""
    return F.cross_entropy(cell_scores, target_cells)


def offset_loss(box_offsets: Tensor, target_cells: Tensor, target_offsets: Tensor) -> Tensor:
    """Mean squared error of the 4 offsets predicted at the target cell ([B, N, 4], [B], [B, 4])."""
    index = target_cells.view(-1, 1, 1).expand(-1, 1, 4)
    predicted = box_offsets.gather(1, index).squeeze(1)  # [B, 4]
    return F.mse_loss(predicted, target_offsets.to(predicted.dtype))


def module_entropy(module_weights: Tensor) -> Tensor:
    """Mean entropy of the module weights w_t over batch and steps ([B, T, M] → scalar)."""
    logs = module_weights.clamp_min(ENTROPY_FLOOR).log()
    return -(module_weights * logs).sum(dim=-1).mean()


def entropy_ramp(iteration: int, begin: int = 150_000, end: int = 160_000) -> float:
    """Scale of the entropy loss: 0 before `begin`, linear to 1 at `end` (official warmup)."""
    if iteration >= end:
        return 1.0
    if iteration < begin:
        return 0.0
    return (iteration - begin) / (end - begin)


def decayed_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(conv/linear weights, everything else trainable), the official L2 split.

    Decayed: the weight of every nn.Linear (our 1×1 convs are Linear layers) and nn.Conv*.
    Not decayed: embeddings, LSTM, biases, the controller's c_init, the REF head's scalars.
    Adam's `weight_decay` on the first group adds wd·w to the gradient, which is exactly the
    gradient of the official `wd · Σ ||w||² / 2` term.
    """
    decayed: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            decayed[id(module.weight)] = module.weight
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in decayed]
    return [p for p in decayed.values() if p.requires_grad], rest


def parameter_groups(model: nn.Module, weight_decay: float = 1e-5) -> list[dict]:
    """Optimizer parameter groups: L2 `weight_decay` on conv/linear weights only."""
    decayed, rest = decayed_parameters(model)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]


@torch.no_grad()
def add_l2_gradient(parameters: list[nn.Parameter], weight_decay: float) -> None:
    """Add the gradient of the official `wd · Σ ||w||² / 2` term (TF's l2_loss), wd · w, to each
    parameter's .grad (a weight without one gets wd · w), after the task loss's backward.

    The same gradient as putting the term in the loss, so gradient clipping still sees it; but
    outside autograd, so a DDP wrapper never meets a weight used outside its forward (which it
    refuses once a task, CLEVR-Ref, leaves some weights without a task gradient). Every rank adds
    the same term to the averaged task gradient: the average of the sums.
    """
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = weight_decay * parameter.detach().clone()
        else:
            parameter.grad.add_(parameter, alpha=weight_decay)


def training_loss(
    output: SNMNOutput,
    answers: Tensor | None = None,
    layouts: Tensor | None = None,
    target_cells: Tensor | None = None,
    target_offsets: Tensor | None = None,
    layout_weight: float = 1.0,
    cell_weight: float = 1.0,
    offset_weight: float = 1.0,
    entropy_weight: float = 0.0,
) -> dict[str, Tensor]:
    """{"total": weighted sum, and each unweighted term}; absent inputs add no term.

    Official weights: answer 1; layout 1 (only with expert layouts); cell and offset 1, or
    0.5/0.5 in joint training; entropy 0.1 · entropy_ramp(iteration) in runs without layouts.
    """
    terms: dict[str, Tensor] = {}
    weights: dict[str, float] = {}
    if answers is not None:
        terms["answer"], weights["answer"] = answer_loss(output.answer_logits, answers), 1.0
    if target_cells is not None:
        terms["cell"], weights["cell"] = cell_loss(output.cell_scores, target_cells), cell_weight
        terms["offset"] = offset_loss(output.box_offsets, target_cells, target_offsets)
        weights["offset"] = offset_weight
    if layouts is not None:
        terms["layout"] = layout_loss(output.module_logits, layouts)
        weights["layout"] = layout_weight
    if entropy_weight:
        terms["entropy"] = module_entropy(output.module_weights)
        weights["entropy"] = entropy_weight
    if not terms:
        raise ValueError("training_loss: no targets given (answers, layouts or target cells)")
    terms["total"] = sum(weights[name] * term for name, term in terms.items())
    return terms
