"""Exact counts behind every evaluation number, from per-question predictions.

"Are there more cubes than spheres?" ends in `greater_than`, so its hit or miss counts towards
compare_number; "What color is the large cube?" ends in `query_color` and counts towards
query_attribute (the five question types of the CLEVR paper, Johnson et al. 2017, routed by the last
program function). Every number here is an integer count (correct, total) and its ratio; the
evaluated rows are checked to be distinct, so no question is counted twice. A CLEVR-Ref box is found
when IoU ≥ 0.5 (P@1).

Shape legend: N evaluated questions, T steps, M modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.clevr.functions import QUESTION_TYPES
from pipeline.data.datasets import QuestionTable
from pipeline.runtime.inference import IOU_THRESHOLD
from snmn.boxes import box_iou
from snmn.layout import MODULE_NAMES

TYPE_ORDER = ("count", "exist", "compare_number", "query_attribute", "compare_attribute")
UNKNOWN_TYPE = "unknown"  # a question without a program


@dataclass
class SplitPredictions:
    """What the model said about each evaluated question of one split."""

    rows: np.ndarray  # [N] int64 rows of the split's QuestionTable, each at most once
    answers: np.ndarray  # [N] int64 predicted answer ids, -1 without a VQA head
    boxes: np.ndarray  # [N, 4] float64 predicted [x, y, w, h] pixels, NaN without a REF head
    modules: np.ndarray  # [N, T] int64 the controller's argmax module at each step

    def __post_init__(self) -> None:
        size = len(self.rows)
        shapes = {"answers": (size,), "boxes": (size, 4)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"SplitPredictions.{name}: expected shape {shape}")
        if self.modules.shape[0] != size:
            raise ValueError("SplitPredictions.modules: one row per question expected")
        if len(np.unique(self.rows)) != size:
            raise ValueError("SplitPredictions.rows: a question is listed twice")


def question_type(last_function: str | None) -> str:
    """The question type routed from the last program function (count, exist, ...)."""
    if last_function is None:
        return UNKNOWN_TYPE
    return QUESTION_TYPES.get(last_function, UNKNOWN_TYPE)


def ratio(correct: int, total: int) -> dict[str, Any]:
    """{"correct", "total", "accuracy"}; accuracy is None when there is nothing to count."""
    return {
        "correct": int(correct),
        "total": int(total),
        "accuracy": correct / total if total else None,
    }


def vqa_metrics(
    predictions: SplitPredictions, table: QuestionTable, family_names: dict[int, str] | None = None
) -> dict[str, Any]:
    """Accuracy overall, per question type and per question family (exact counts)."""
    rows = predictions.rows
    truth = table.answers[rows]  # [N]
    known = truth >= 0  # a test-split question has no answer: not counted
    hits = (predictions.answers == truth) & known
    types = np.array([table.question_types[r] or UNKNOWN_TYPE for r in rows], dtype=object)
    families = table.families[rows]
    found_types = [t for t in TYPE_ORDER if (types == t).any()]
    found_types += sorted(set(types.tolist()) - set(TYPE_ORDER))
    per_type = {t: _counted(hits, known, types == t) for t in found_types}
    per_family = {}
    for family in np.unique(families):
        entry = _counted(hits, known, families == family)
        if family_names and int(family) in family_names:
            entry["name"] = family_names[int(family)]
        per_family[str(int(family))] = entry
    return {
        **ratio(hits.sum(), known.sum()),
        "questions": len(rows),
        "per_type": per_type,
        "per_family": per_family,
    }


def _counted(hits: np.ndarray, known: np.ndarray, selected: np.ndarray) -> dict[str, Any]:
    return ratio((hits & selected).sum(), (known & selected).sum())


def box_hits(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU [N] float64, found [N] bool: IoU ≥ 0.5) of predicted and true [x, y, w, h] boxes."""
    iou = box_iou(np.asarray(predicted, np.float64), np.asarray(truth, np.float64)).numpy()
    return iou, iou >= IOU_THRESHOLD


def ref_metrics(predictions: SplitPredictions, table: QuestionTable) -> dict[str, Any]:
    """P@1: the share of expressions whose predicted box has IoU ≥ 0.5 with the true box."""
    truth = table.boxes[predictions.rows]  # [N, 4]
    has_box = ~np.isnan(truth).any(axis=1)  # a VQA row has no box: not counted
    iou, found = box_hits(predictions.boxes[has_box], truth[has_box])
    iou = np.nan_to_num(iou, nan=0.0)  # no predicted box: a miss
    counts = ratio(found.sum(), has_box.sum())
    return {
        "correct": counts["correct"],
        "total": counts["total"],
        "p_at_1": counts["accuracy"],
        "mean_iou": float(iou.mean()) if iou.size else None,
        "questions": len(predictions.rows),
    }


def layout_metrics(predictions: SplitPredictions, table: QuestionTable) -> dict[str, Any]:
    """Agreement with the expert layouts (NoOp padding included), per step and whole layout.

    Questions without a program (no expert layout) are not counted.
    """
    expert = table.layouts[predictions.rows]  # [N, T]
    has_layout = expert[:, 0] >= 0
    hits = predictions.modules[has_layout] == expert[has_layout]  # [n, T]
    total = int(has_layout.sum())
    steps = ratio(hits.sum(), hits.size)
    return {
        "step_correct": steps["correct"],
        "step_total": steps["total"],
        "step_accuracy": steps["accuracy"],
        "per_step": [ratio(hits[:, t].sum(), total) for t in range(hits.shape[1])],
        "exact": ratio(hits.all(axis=1).sum(), total),
    }


def module_usage(predictions: SplitPredictions) -> dict[str, Any]:
    """Per step, how many questions ran each module as the argmax, and its share."""
    modules = predictions.modules  # [N, T]
    questions = modules.shape[0]
    usage = []
    for t in range(modules.shape[1]):
        counts = np.bincount(modules[:, t], minlength=len(MODULE_NAMES))  # [M]
        usage.append(
            {
                "step": t + 1,
                "counts": {name: int(c) for name, c in zip(MODULE_NAMES, counts, strict=True)},
                "shares": {
                    name: (int(c) / questions if questions else None)
                    for name, c in zip(MODULE_NAMES, counts, strict=True)
                },
            }
        )
    return {"questions": questions, "per_step": usage}
