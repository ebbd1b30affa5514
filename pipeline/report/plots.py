"""The report's figures (matplotlib, no display): one per example, and the summary plots.

An example figure for "What color is the large cube left of the red sphere?" has one column
per executed step: on top the image with the attention that step left on the stack, titled with
its module, weight and stack depth and its most attended words ("red", "sphere"); below the
module distribution as bars. The summary plots are the training curves (train_curve.csv),
accuracy by question type next to the question-only baseline, module usage per step, and
faithfulness per module; each is a PNG (DVC plots, MLflow artifacts), per-type accuracy also a
CSV for DVC's own plot renderer.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from pipeline.errors import DataError
from pipeline.runtime.inference import StepTrace
from pipeline.tables import write_atomic
from snmn.layout import MODULE_NAMES

DPI = 80


@dataclass
class Example:
    """One question as the report shows it."""

    task: str  # vqa | ref
    split: str
    row: int
    image: np.ndarray  # [height, width, 3] uint8
    question: str
    words: list[str]  # [S]
    expert: list[str]  # expert layout without NoOp padding ([] without a program)
    correct: bool
    predicted: str  # answer, or box text
    truth: str
    predicted_box: np.ndarray | None  # [4] x, y, w, h pixels (REF)
    true_box: np.ndarray | None
    trace: StepTrace  # module weights, word attention, attention maps, stack depth per step

    @property
    def name(self) -> str:
        return f"{self.task}_{self.split}_{self.row:06d}"


def load_image(path: str | Path) -> np.ndarray:
    """[height, width, 3] uint8 RGB (CLEVR's alpha channel dropped)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise DataError(f"{path}: cannot read image: {error}") from None


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def example_figure(example: Example) -> bytes:
    """The image, then per shown step: attention overlay (top) and module weights (bottom)."""
    trace = example.trace
    steps = trace.shown
    height, width = example.image.shape[:2]
    figure = Figure(figsize=(3.0 * (len(steps) + 1), 4.6))
    axes = figure.subplots(
        2, len(steps) + 1, gridspec_kw={"height_ratios": [2, 1.3]}, squeeze=False
    )
    figure.suptitle(example.question, fontsize=10)
    first = axes[0, 0]
    first.imshow(example.image)
    verdict = "right" if example.correct else "wrong"
    first.set_title(
        f"{verdict}\npredicted: {example.predicted}\ntrue: {example.truth}",
        fontsize=8,
        color="tab:green" if example.correct else "tab:red",
    )
    for box, color in ((example.true_box, "lime"), (example.predicted_box, "red")):
        if box is not None and example.task == "ref":
            first.add_patch(Rectangle(box[:2], box[2], box[3], fill=False, color=color, lw=2))
    axes[1, 0].axis("off")
    legend = "\n\nboxes: true green, predicted red" if example.task == "ref" else ""
    expert = ", ".join(example.expert) or "none"
    axes[1, 0].text(0, 0.5, _wrap(f"expert layout: {expert}", 34) + legend, fontsize=8, va="center")
    for column, t in enumerate(steps, start=1):
        weights = trace.module_weights[t]
        module = int(trace.modules[t])
        top = axes[0, column]
        top.imshow(example.image)
        top.imshow(
            trace.attention[t],
            cmap="inferno",
            alpha=0.6,
            vmin=0.0,
            vmax=float(trace.attention[t].max()),
            extent=(0, width, height, 0),
            interpolation="nearest",
        )
        words = _top_words(example.words, trace.text_attention[t])
        top.set_title(
            f"step {t + 1}: {MODULE_NAMES[module]} {weights[module]:.2f}\n"
            f"depth {int(trace.depth[t])} · {words}",
            fontsize=8,
        )
        bars = axes[1, column]
        colors = ["tab:orange" if m == module else "tab:gray" for m in range(len(weights))]
        bars.barh(range(len(weights)), weights, color=colors)
        bars.set_yticks(range(len(weights)), MODULE_NAMES, fontsize=6)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=6)
    for axis in axes[0]:
        axis.set_xticks([])
        axis.set_yticks([])
    return png_bytes(figure)


def _top_words(words: list[str], attention: np.ndarray, count: int = 2) -> str:
    order = np.argsort(-attention[: len(words)])[:count]
    return " ".join(f"“{words[i]}” {attention[i]:.2f}" for i in order)


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


# ---------------------------------------------------------------------------------------------
# Summary plots
# ---------------------------------------------------------------------------------------------


def write_plots(
    curve_path: str | Path, metrics: dict[str, Any] | None, plots_dir: str | Path
) -> dict[str, str]:
    """Write every plot (a "no data" placeholder where there is none, so that DVC always finds
    its outputs) and the per-type CSV; name → path of each PNG."""
    folder = Path(plots_dir)
    metrics = metrics or {}
    figures = {
        "training_curves": training_curves(curve_path),
        "accuracy_by_type": accuracy_by_type(metrics),
        "module_usage": module_usage_plot(metrics),
        "faithfulness": faithfulness_plot(metrics),
    }
    _write_csv(folder / "accuracy_by_type.csv", per_type_rows(metrics))
    written: dict[str, str] = {}
    for name, figure in figures.items():
        data = png_bytes(figure if figure is not None else _placeholder(name))
        path = folder / f"{name}.png"
        write_atomic(path, lambda temporary, data=data: temporary.write_bytes(data))
        written[name] = str(path)
    return written


def _placeholder(name: str) -> Figure:
    figure = Figure(figsize=(4, 1.2))
    axis = figure.subplots()
    axis.axis("off")
    axis.text(0.5, 0.5, f"{name.replace('_', ' ')}: no data", ha="center", va="center")
    return figure


def read_curve(path: str | Path) -> dict[str, np.ndarray]:
    """train_curve.csv as column → values (NaN where a row has none)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {
        column: np.array([float(row[column]) if row[column] else np.nan for row in rows])
        for column in rows[0]
    }


def training_curves(path: str | Path) -> Figure | None:
    """Losses and accuracies against the iteration."""
    if not Path(path).is_file():
        return None
    curve = read_curve(path)
    if "step" not in curve:
        return None
    figure = Figure(figsize=(11, 4))
    losses, scores = figure.subplots(1, 2)
    for column, values in curve.items():
        if "_loss_" in column:
            losses.plot(curve["step"], values, label=column)
        elif column.endswith(("accuracy", "p_at_1")):
            shown = ~np.isnan(values)
            scores.plot(curve["step"][shown], values[shown], marker=".", label=column)
    losses.set(title="training losses", xlabel="iteration")
    scores.set(title="accuracy", xlabel="iteration", ylim=(0, 1))
    for axis in (losses, scores):
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    return figure


def per_type_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"type", "snmn", "question_only"}] from the evaluate metrics (VQA only)."""
    answers = metrics.get("vqa", {}).get("answers")
    if not answers:
        return []
    blind = metrics.get("question_only_baseline", {})
    rows = [{"type": "all", "snmn": answers["accuracy"], "question_only": blind.get("accuracy")}]
    for name, entry in answers["per_type"].items():
        other = blind.get("per_type", {}).get(name, {})
        rows.append(
            {"type": name, "snmn": entry["accuracy"], "question_only": other.get("accuracy")}
        )
    return rows


def accuracy_by_type(metrics: dict[str, Any]) -> Figure | None:
    rows = per_type_rows(metrics)
    p_at_1 = metrics.get("ref", {}).get("boxes", {}).get("p_at_1")
    if p_at_1 is not None:
        rows.append({"type": "REF P@1", "snmn": p_at_1, "question_only": None})
    if not rows:
        return None
    figure = Figure(figsize=(9, 3.8))
    axis = figure.subplots()
    positions = np.arange(len(rows))
    snmn = [row["snmn"] or 0.0 for row in rows]
    axis.bar(positions - 0.2, snmn, width=0.4, label="SNMN")
    if any(row["question_only"] is not None for row in rows):
        blind = [row["question_only"] or 0.0 for row in rows]
        axis.bar(positions + 0.2, blind, width=0.4, label="question only")
    axis.set_xticks(positions, [row["type"] for row in rows], fontsize=8, rotation=15)
    axis.set(ylim=(0, 1), ylabel="accuracy", title="accuracy by question type")
    axis.legend(fontsize=8)
    return figure


def module_usage_plot(metrics: dict[str, Any]) -> Figure | None:
    """Share of questions running each module (argmax) at each step, per task."""
    tasks = [t for t in ("vqa", "ref") if "module_usage" in metrics.get(t, {})]
    if not tasks:
        return None
    figure = Figure(figsize=(5.5 * len(tasks), 3.6))
    for axis, task in zip(np.atleast_1d(figure.subplots(1, len(tasks))), tasks, strict=True):
        steps = metrics[task]["module_usage"]["per_step"]
        shares = np.array([[s["shares"][m] or 0.0 for m in MODULE_NAMES] for s in steps])
        image = axis.imshow(shares.T, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        axis.set_yticks(range(len(MODULE_NAMES)), MODULE_NAMES, fontsize=7)
        axis.set_xticks(range(len(steps)), [str(s["step"]) for s in steps], fontsize=7)
        axis.set(xlabel="step", title=f"{task}: module usage (argmax share)")
        figure.colorbar(image, ax=axis)
    return figure


def faithfulness_plot(metrics: dict[str, Any]) -> Figure | None:
    """Attention share on the program's objects vs the share of uniform attention."""
    found = {
        t: metrics[t]["faithfulness"]["per_module"]
        for t in ("vqa", "ref")
        if "per_module" in metrics.get(t, {}).get("faithfulness", {})
    }
    if not found:
        return None
    figure = Figure(figsize=(5.5 * len(found), 3.6))
    for axis, (task, modules) in zip(
        np.atleast_1d(figure.subplots(1, len(found))), found.items(), strict=True
    ):
        names = list(modules)
        positions = np.arange(len(names))
        on = [modules[n]["attention_on_objects"] or 0.0 for n in names]
        chance = [modules[n]["uniform_attention_on_objects"] or 0.0 for n in names]
        axis.bar(positions - 0.2, on, width=0.4, label="attention on the objects")
        axis.bar(positions + 0.2, chance, width=0.4, label="uniform attention")
        axis.set_xticks(positions, names, fontsize=7)
        axis.set(ylim=(0, max(0.05, 1.25 * max(on + chance))), title=f"{task}: faithfulness")
        axis.set_ylabel("share of attention on the objects", fontsize=8)
        axis.legend(fontsize=7)
    return figure


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["type", "snmn", "question_only"])
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    text = buffer.getvalue()
    write_atomic(path, lambda temporary: temporary.write_text(text))
