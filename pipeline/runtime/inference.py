"""A trained SNMN run over batches of questions, and the hits counted on the way.

For "What color is the large cube?" a hit is the argmax answer "red"; for "the large cube left
of the red sphere" a predicted box with IoU ≥ 0.5 against the true one; for the layout, the
controller's argmax module equal to the expert one at every step. Counts are summed over DDP
ranks with one all-reduce. Training validates with these, evaluation and the report collect
per-question predictions through `predict`; the report and the demo show one question's run as
its `step_trace`.

Shape legend: B batch, T steps, S question words, M modules, H×W grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from pipeline.data.datasets import QuestionDataset
from snmn.boxes import BoxGrid, box_iou, predict_boxes
from snmn.layout import NOOP
from snmn.model import SNMN, SNMNOutput

IOU_THRESHOLD = 0.5  # a CLEVR-Ref box is found at IoU ≥ 0.5 (P@1)


@torch.no_grad()
def predict(
    model: SNMN,
    dataset: QuestionDataset,
    rows: list[int],
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[dict[str, torch.Tensor], SNMNOutput]]:
    """(batch, output) for `rows` of `dataset`, in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = to_device(dataset.__getitems__(rows[start : start + batch_size]), device)
            yield batch, model(batch["tokens"], batch["lengths"], batch["features"])
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class StepTrace:
    """How SNMN ran one question, step by step: what the report and the demo show of it.

    For "Are there more cubes than spheres?" a trained controller runs Find, Find, DescribeTwo,
    then NoOp to the last of the T = 9 steps. A NoOp step leaves the stack as it was, so only
    steps 0, 1 and 2 are `shown` and 3..8 are `folded`; a controller that picks NoOp at every
    step has all of them shown.
    """

    module_weights: np.ndarray  # [T, M] the controller's module distribution
    text_attention: np.ndarray  # [T, S] over the question's words
    attention: np.ndarray  # [T, H, W] the top of the stack after the step, softmax over the cells
    depth: np.ndarray  # [T] stack pointer position after the step (0 = empty)

    @property
    def modules(self) -> np.ndarray:
        """[T] the most likely module of each step."""
        return self.module_weights.argmax(axis=1)

    @property
    def shown(self) -> list[int]:
        """Steps (from 0) whose most likely module is not NoOp; all steps if every one is."""
        steps = [t for t, module in enumerate(self.modules) if module != NOOP]
        return steps or list(range(len(self.modules)))

    @property
    def folded(self) -> list[int]:
        """The NoOp steps left out of `shown`."""
        shown = set(self.shown)
        return [t for t in range(len(self.modules)) if t not in shown]


def step_trace(output: SNMNOutput, i: int, length: int) -> StepTrace:
    """The trace of question `i` of a batch's `output`; `length`: its number of words."""
    attention = output.top_attention[i].flatten(1).float().softmax(dim=1)  # [T, H·W]
    return StepTrace(
        module_weights=output.module_weights[i].float().cpu().numpy(),
        text_attention=output.text_attention[i, :, :length].float().cpu().numpy(),
        attention=attention.view(output.top_attention[i].shape).cpu().numpy(),
        depth=output.stack_pointers[i].argmax(dim=1).cpu().numpy(),
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on `device` (asynchronous from pinned memory), its features made float32 there:
    they travel in the store's float16, half the bytes (pipeline/data/datasets.py)."""
    moved = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    moved["features"] = moved["features"].float()
    return moved


def answer_hits(output: SNMNOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] bool: the argmax answer equals the true one (never true for unknown answers, -1)."""
    return output.answer_logits.argmax(dim=1) == batch["answers"]


def box_hits(
    output: SNMNOutput, batch: dict[str, torch.Tensor], grid: BoxGrid, boxes: torch.Tensor
) -> torch.Tensor:
    """[B] bool: IoU(predicted box, true box [B, 4] pixels) ≥ 0.5."""
    predicted = predict_boxes(output.cell_scores, output.box_offsets, grid)
    return box_iou(predicted, boxes.to(predicted.device)) >= IOU_THRESHOLD


def layout_hits(output: SNMNOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, T] bool: the controller's argmax module equals the expert one at each step."""
    return output.module_logits.argmax(dim=2) == batch["layouts"]


def all_reduce_sum(counts: torch.Tensor) -> torch.Tensor:
    """Sum a count tensor over every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        counts = counts.clone()
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return counts


def accuracy_counts(
    model: SNMN,
    dataset: QuestionDataset,
    rows: list[int],
    batch_size: int,
    device: torch.device,
    grid: BoxGrid | None = None,
) -> dict[str, float]:
    """Accuracy (VQA), P@1 (REF) and layout accuracy over `rows`, reduced over ranks.

    Every rank must call this (it ends in an all-reduce), even with no rows of its own.
    """
    # [answer right, answer total, box right, box total, steps right, steps total, layouts exact,
    #  layouts total]
    counts = torch.zeros(8, dtype=torch.float64, device=device)
    boxes = torch.from_numpy(dataset.questions.boxes)
    for batch, output in predict(model, dataset, rows, batch_size, device):
        if output.answer_logits is not None:
            known = batch["answers"] >= 0
            counts[0] += (answer_hits(output, batch) & known).sum()
            counts[1] += known.sum()
        if output.cell_scores is not None and grid is not None:
            hits = box_hits(output, batch, grid, boxes[batch["rows"].cpu()])
            counts[2] += hits.sum()
            counts[3] += hits.numel()
        has_layout = batch["layouts"][:, 0] >= 0
        steps = layout_hits(output, batch)[has_layout]
        counts[4] += steps.sum()
        counts[5] += steps.numel()
        counts[6] += steps.all(dim=1).sum()
        counts[7] += has_layout.sum()
    counts = all_reduce_sum(counts).tolist()
    metrics = {}
    if counts[1]:
        metrics["accuracy"] = counts[0] / counts[1]
    if counts[3]:
        metrics["p_at_1"] = counts[2] / counts[3]
    if counts[5]:
        metrics["layout_step_accuracy"] = counts[4] / counts[5]
        metrics["layout_exact"] = counts[6] / counts[7]
    metrics["questions"] = max(counts[1], counts[3])
    return metrics
