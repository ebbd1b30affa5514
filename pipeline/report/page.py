"""The visual report: how SNMN answered, step by step, for a few questions right and wrong.

For "What color is the large cube left of the red sphere?" the report shows the image, then one
panel per executed step: the attention map that step left on top of the stack laid over the image,
the module distribution (Find 0.97, ...), the stack depth, and in the page the question with each
step's word attention as shading ("red sphere" dark at step 1). Then the predicted and the true
answer (for CLEVR-Ref, both boxes). The page is one self-contained HTML file (every image embedded
as base64 PNG); the example PNGs and the plots (training curves, accuracy by question type, module
usage, faithfulness; pipeline/report/plots.py) are written beside it for DVC and logged to the
MLflow run that trained the model.

Shape legend: T steps, S question length, M modules, H×W grid, L stack slots.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.clevr.readers import check_image_file
from pipeline.config import ReportConfig
from pipeline.data.datasets import (
    QuestionDataset,
    evaluation_rows,
    model_box_grid,
    read_question_table,
)
from pipeline.data.text import tokenize_text
from pipeline.devices import resolve_device
from pipeline.evaluation.evaluate import collect_predictions, headline_metrics, training_run
from pipeline.evaluation.metrics import box_hits
from pipeline.report import plots
from pipeline.report.plots import Example
from pipeline.runtime.artifact import load_model
from pipeline.runtime.inference import predict, step_trace
from pipeline.tables import read_parquet, write_atomic
from snmn.boxes import predict_boxes
from snmn.layout import MODULE_NAMES, NOOP
from snmn.model import SNMN


def visualize(settings: ReportConfig, project_dir: str | Path = ".") -> dict[str, Any]:
    """Write the HTML report, the example PNGs and the plots; log them to MLflow."""
    device = resolve_device(settings.device, "report.device")
    model, payload = load_model(settings.model_path, settings.tokens_dir, device)
    examples: list[Example] = []
    for task, split in (("vqa", settings.vqa_split), ("ref", settings.ref_split)):
        builds = model.config.builds_vqa if task == "vqa" else model.config.builds_ref
        if builds and split:
            examples += _examples(model, payload, settings, task, split, device)
    output = Path(settings.output_dir)
    figures: dict[str, bytes] = {}
    for example in examples:
        figures[example.name] = plots.example_figure(example)
        _write_bytes(output / "examples" / f"{example.name}.png", figures[example.name])
    for old in (output / "examples").glob("*.png"):  # examples of an earlier report
        if old.stem not in figures:
            old.unlink()
    metrics = _read_json(settings.metrics_path)
    plot_files = plots.write_plots(settings.curve_path, metrics, settings.plots_dir)
    page = render_html(examples, figures, plot_files, metrics, payload)
    write_atomic(output / "index.html", lambda temporary: temporary.write_text(page))
    tracker = training_run(payload, "", project_dir)
    if tracker is not None:
        tracker.log_artifact(output / "index.html", folder="report")
        for name in figures:
            tracker.log_artifact(output / "examples" / f"{name}.png", folder="report/examples")
        for path in [*plot_files.values(), Path(settings.plots_dir) / "accuracy_by_type.csv"]:
            tracker.log_artifact(path, folder="report/plots")
    _say(f"wrote {output / 'index.html'} ({len(examples)} examples, {len(plot_files)} plots)")
    return {"html": str(output / "index.html"), "examples": len(examples), "plots": plot_files}


# ---------------------------------------------------------------------------------------------
# Picking and running the examples
# ---------------------------------------------------------------------------------------------


def _examples(
    model: SNMN,
    payload: dict[str, Any],
    settings: ReportConfig,
    task: str,
    split: str,
    device: torch.device,
) -> list[Example]:
    config = model.config
    table = read_question_table(settings.tokens_dir, split, config.num_steps)
    columns = ["image_filename", "question", "answer"]
    text = read_parquet(Path(settings.tokens_dir) / f"{split}.parquet", columns=columns)
    grid = model_box_grid(table, config.feature_height, config.feature_width)
    dataset = QuestionDataset(table, settings.features_dir)  # a few questions: page_cache
    candidates = evaluation_rows(dataset.rows_with_features, 0, 1, settings.candidates)
    predictions = collect_predictions(model, dataset, candidates, 64, device, grid)
    if task == "vqa":
        right = predictions.answers == table.answers[predictions.rows]
    else:
        right = box_hits(predictions.boxes, table.boxes[predictions.rows])[1]
    rows = pick_examples(predictions.rows, right, settings.num_examples, settings.seed)
    filenames, questions = text["image_filename"].to_pylist(), text["question"].to_pylist()
    answers = text["answer"].to_pylist()
    answer_words = payload["answer_words"]
    examples = []
    for batch, output in predict(model, dataset, rows, len(rows) or 1, device):
        boxes = None
        if output.cell_scores is not None:
            boxes = predict_boxes(output.cell_scores, output.box_offsets, grid).cpu().numpy()
        for i, row in enumerate(batch["rows"].tolist()):
            length = int(batch["lengths"][i])
            expert = [MODULE_NAMES[m] for m in table.layouts[row] if m > NOOP]  # no padding
            image_path = Path(settings.images_dir) / split / filenames[row]
            check_image_file(image_path, int(table.image_index[row]))
            example = Example(
                task=task,
                split=split,
                row=row,
                image=plots.load_image(image_path),
                question=questions[row],
                words=tokenize_text(questions[row])[:length],
                expert=expert,
                correct=False,
                predicted="",
                truth="",
                predicted_box=None if boxes is None else boxes[i],
                true_box=None if task == "vqa" else table.boxes[row],
                trace=step_trace(output, i, length),
            )
            _fill_answer(example, output.answer_logits, i, answer_words, answers[row])
            examples.append(example)
    return examples


def pick_examples(rows: np.ndarray, right: np.ndarray, count: int, seed: int) -> list[int]:
    """`count` rows, half answered right and half wrong when both kinds exist, sorted."""
    generator = np.random.default_rng(seed)
    correct, wrong = rows[right], rows[~right]
    take_right = min(len(correct), max(math.ceil(count / 2), count - len(wrong)))
    take_wrong = min(len(wrong), count - take_right)
    chosen = np.concatenate(
        [
            generator.choice(correct, take_right, replace=False),
            generator.choice(wrong, take_wrong, replace=False),
        ]
    )
    return sorted(int(r) for r in chosen)


def _fill_answer(example: Example, logits, i: int, answer_words: list[str], truth: Any) -> None:
    if example.task == "vqa":
        predicted = answer_words[int(logits[i].argmax())]
        example.predicted, example.truth = predicted, str(truth)
        example.correct = predicted == truth
        return
    iou, found = box_hits(example.predicted_box[None], example.true_box[None])
    example.correct = bool(found[0])
    example.predicted = f"box {_box_text(example.predicted_box)} (IoU {float(iou[0]):.2f})"
    example.truth = f"box {_box_text(example.true_box)}"


def _box_text(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1400px; }
.example { border: 1px solid #ccc; border-radius: 6px; padding: 12px; margin: 18px 0; }
.right { color: #1a7f37; font-weight: bold; } .wrong { color: #c62828; font-weight: bold; }
img { max-width: 100%; } table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 7px; font-size: 13px; text-align: left; }
.word { padding: 1px 3px; margin: 0 1px; border-radius: 3px; }
.note { background: #fff4e5; border-left: 4px solid #f0a020; padding: 8px 12px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; }
figcaption { text-align: center; font-size: 13px; color: #555; }
"""


def render_html(
    examples: list[Example],
    figures: dict[str, bytes],
    plot_files: dict[str, str],
    metrics: dict[str, Any] | None,
    payload: dict[str, Any],
) -> str:
    """The whole report as one HTML document (images inline as base64 PNG)."""
    model = payload.get("config", {}).get("model", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SNMN report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>SNMN: step-by-step report</h1>",
        f"<p>Model task {html.escape(str(model.get('task', '?')))}, params fingerprint "
        f"{html.escape(str(payload.get('fingerprint', '?')))}.</p>",
    ]
    if metrics is not None:
        parts.append(_summary_html(metrics))
    parts.append(f"<h2>Examples ({len(examples)})</h2>")
    parts.append(
        "<p>Per step: the attention on top of the stack after the step (bright = high), the "
        "module weights (orange = argmax), the stack depth and the word attention (shading: "
        "full at 0.5 or more).</p>"
    )
    for example in examples:
        parts.append(_example_html(example, figures[example.name]))
    parts.append("<h2>Plots</h2><div class='plots'>")
    for name, path in plot_files.items():
        parts.append(f"<figure>{_img(Path(path).read_bytes(), name)}")
        parts.append(f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>")
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"


def _summary_html(metrics: dict[str, Any]) -> str:
    """Which dataset, and this run next to the published numbers."""
    from pipeline.evaluation.paper import METRIC_NAMES, comparison

    dataset = metrics["dataset"]
    verdict = "comparable" if dataset["comparable"] else "NOT comparable"
    lines = [
        f"<p class='note'>Dataset: <b>{html.escape(dataset['name'])}</b>, split "
        f"{html.escape(dataset['split'])}. These numbers are <b>{verdict}</b> with the "
        f"paper's. {html.escape('; '.join(dataset['reasons']))}</p>",
    ]
    model = metrics["model"]
    table = comparison(model["task"], model["use_layouts"], headline_metrics(metrics), dataset)
    lines.append(
        "<table><tr><th>setting</th><th>metric</th><th>paper</th><th>public port</th>"
        "<th>this run</th></tr>"
    )
    for row in table["rows"]:
        if row["setting"] == table["this_setting"]:
            lines.append(
                f"<tr><td>{html.escape(row['setting_name'])}</td>"
                f"<td>{METRIC_NAMES[row['metric']]}</td><td>{row['paper']:.1f}</td>"
                f"<td>{row['port']:.1f}</td><td><b>{_number(row['this_run'])}</b></td></tr>"
            )
    lines.append("</table>")
    extra = []
    for task in ("vqa", "ref"):
        layout = metrics.get(task, {}).get("layout", {})
        if layout.get("exact", {}).get("accuracy") is not None:
            extra.append(
                f"{task.upper()} layout agreement: {100 * layout['step_accuracy']:.1f}% of steps, "
                f"{100 * layout['exact']['accuracy']:.1f}% of whole layouts"
            )
    blind = metrics.get("question_only_baseline")
    if blind is not None and blind.get("accuracy") is not None:
        extra.append(f"question-only baseline: {100 * blind['accuracy']:.1f}%")
    if extra:
        lines.append("<p>" + html.escape(" · ".join(extra)) + "</p>")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _example_html(example: Example, figure: bytes) -> str:
    verdict = "right" if example.correct else "wrong"
    lines = [
        f"<div class='example' id='{example.name}'>",
        f"<h3>{html.escape(example.question)}</h3>",
        f"<p>{example.task.upper()} · {example.split} row {example.row} · "
        f"<span class='{verdict}'>{verdict}</span> · predicted "
        f"<b>{html.escape(example.predicted)}</b> · true <b>{html.escape(example.truth)}</b>"
        f" · expert layout: {html.escape(', '.join(example.expert) or 'none')}</p>",
        _img(figure, example.name),
        "<table><tr><th>step</th><th>module (weight)</th><th>stack depth</th>"
        "<th>word attention</th></tr>",
    ]
    trace = example.trace
    for t in trace.shown:
        weights = trace.module_weights[t]
        module = int(trace.modules[t])
        words = " ".join(
            f"<span class='word' style='background: rgba(240,120,0,{min(1.0, 2 * a):.2f})' "
            f"title='{a:.3f}'>{html.escape(w)}</span>"
            for w, a in zip(example.words, trace.text_attention[t], strict=False)
        )
        lines.append(
            f"<tr><td>{t + 1}</td><td>{MODULE_NAMES[module]} ({weights[module]:.2f})</td>"
            f"<td>{int(trace.depth[t])}</td><td>{words}</td></tr>"
        )
    lines += ["</table>", "</div>"]
    return "\n".join(lines)


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


def _read_json(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        _say(f"{path} not found: the report has no accuracy plots (run `snmn evaluate` first)")
        return None
    return json.loads(path.read_text())


def _write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda temporary: temporary.write_bytes(data))


def _say(message: str) -> None:
    print(f"[visualize] {message}", file=sys.stderr, flush=True)
