"""Running a trained SNMN over a split and counting what it got right; the evaluate stage.

For "How many cyan things are there?" a prediction is right when the argmax answer is "2"; for
"the large cube left of the red sphere" when the predicted box overlaps the true one with IoU ≥ 0.5
(P@1). Counts are integers, summed over ranks with one all-reduce, never averaged shard means; each
rank evaluates a disjoint share of the rows, so no question is counted twice and none is padding.

`evaluate` is the `snmn evaluate` stage: the EMA model of model.pt on the evaluation splits —
accuracy per question type and family, P@1, agreement with the expert layouts, module usage per
step, faithfulness of the attention (pipeline/evaluation/faithfulness.py), optionally the
question-only baseline — written as DVC metrics, set next to the paper
(pipeline/evaluation/paper.py) and logged to the MLflow run that trained the model.

On a subset of CLEVR (features extracted for some of the images the questions ask about) the
questions whose image has features are scored and the others skipped: each split's `questions`
says how many of how many were scored and skipped, and the comparability note says it too, since
numbers on part of a split do not compare with the paper's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.clevr.readers import read_questions, read_scenes, stream_json
from pipeline.config import Config, EvaluateConfig, flatten, from_dict
from pipeline.data.datasets import (
    QuestionDataset,
    QuestionTable,
    evaluation_rows,
    model_box_grid,
    read_question_table,
)
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError, DataError
from pipeline.evaluation.baseline import predict_question_only, train_question_only
from pipeline.evaluation.faithfulness import FaithfulnessMeter
from pipeline.evaluation.metrics import (
    SplitPredictions,
    layout_metrics,
    module_usage,
    ref_metrics,
    vqa_metrics,
)
from pipeline.evaluation.paper import comparison, comparison_markdown, describe_dataset
from pipeline.runtime.artifact import load_model
from pipeline.runtime.inference import predict
from pipeline.tables import read_parquet, write_atomic, write_json_atomic
from snmn.boxes import BoxGrid, predict_boxes
from snmn.model import SNMN, SNMNOutput

# ---------------------------------------------------------------------------------------------
# Per-question predictions
# ---------------------------------------------------------------------------------------------

BatchCallback = Callable[[dict[str, torch.Tensor], SNMNOutput], None]

HEADLINE_MODULES = ("Find", "Transform", "Filter")  # the modules that select objects


def collect_predictions(
    model: SNMN,
    dataset: QuestionDataset,
    rows: list[int],
    batch_size: int,
    device: torch.device,
    grid: BoxGrid | None = None,
    on_batch: BatchCallback | None = None,
) -> SplitPredictions:
    """The model's answer, box and argmax modules for each of `rows` (each row once)."""
    answers, boxes, modules = [], [], []
    for batch, output in predict(model, dataset, rows, batch_size, device):
        size = batch["lengths"].shape[0]
        if output.answer_logits is not None:
            answers.append(output.answer_logits.argmax(dim=1).cpu())
        else:
            answers.append(torch.full((size,), -1, dtype=torch.int64))
        if output.cell_scores is not None and grid is not None:
            boxes.append(predict_boxes(output.cell_scores, output.box_offsets, grid).cpu())
        else:
            boxes.append(torch.full((size, 4), float("nan"), dtype=torch.float64))
        modules.append(output.module_logits.argmax(dim=2).cpu())  # [B, T]
        if on_batch is not None:
            on_batch(batch, output)
    steps = model.config.num_steps
    return SplitPredictions(
        rows=np.asarray(rows, dtype=np.int64),
        answers=torch.cat(answers).numpy() if answers else np.zeros(0, np.int64),
        boxes=torch.cat(boxes).numpy() if boxes else np.zeros((0, 4)),
        modules=torch.cat(modules).numpy() if modules else np.zeros((0, steps), np.int64),
    )


# ---------------------------------------------------------------------------------------------
# The evaluate stage
# ---------------------------------------------------------------------------------------------


def evaluate(settings: EvaluateConfig, project_dir: str | Path = ".") -> dict[str, Any]:
    """Evaluate model.pt on the evaluation splits; write the metrics and the comparison."""
    device = resolve_device(settings.device, "evaluate.device")
    model, payload = load_model(settings.model_path, settings.tokens_dir, device)
    trained = payload.get("config", {}).get("train", {})
    use_layouts = bool(trained.get("use_layouts", True))
    results: dict[str, Any] = {
        "model": {
            "path": str(settings.model_path),
            "fingerprint": payload.get("fingerprint"),
            "task": model.config.task,
            "use_layouts": use_layouts,
            "iterations": trained.get("iterations"),
        }
    }
    tables = {}
    for task, split in (("vqa", settings.vqa_split), ("ref", settings.ref_split)):
        builds = model.config.builds_vqa if task == "vqa" else model.config.builds_ref
        if builds and split:
            results[task], tables[task] = evaluate_split(
                model, settings, task, split, device, payload.get("training_data")
            )
    if not tables:
        raise ConfigError(
            f"evaluate: the model (task {model.config.task}) has no head for the splits named "
            f"(vqa_split {settings.vqa_split!r}, ref_split {settings.ref_split!r})"
        )
    if settings.question_only_baseline and "vqa" in tables:
        _say(f"training the question-only baseline ({settings.baseline_iterations} iterations)")
        train = read_question_table(
            settings.tokens_dir, settings.baseline_train_split, model.config.num_steps
        )
        blind = train_question_only(
            model.config,
            train,
            settings.baseline_iterations,
            settings.baseline_batch_size,
            settings.baseline_learning_rate,
            settings.seed,
            device,
        )
        table, rows = tables["vqa"]
        predictions = predict_question_only(blind, table, rows, settings.batch_size, device)
        results["question_only_baseline"] = {
            "train_split": settings.baseline_train_split,
            "iterations": settings.baseline_iterations,
            **vqa_metrics(predictions, table),
        }
    headline = headline_metrics(results)
    dataset = _merged_dataset([results[task]["dataset"] for task in tables])
    results["dataset"] = dataset
    paper_table = comparison(model.config.task, use_layouts, headline, dataset)
    markdown = comparison_markdown(paper_table, extra=_baseline_lines(results))
    write_json_atomic(results, settings.metrics_path)
    write_json_atomic(headline, settings.headline_path)
    write_json_atomic(paper_table, settings.comparison_path)
    write_atomic(settings.comparison_markdown, lambda temporary: temporary.write_text(markdown))
    tracker = training_run(payload, settings.mlflow_run_id, project_dir)
    if tracker is not None:
        log_numbers(tracker, "eval", results, step=int(trained.get("iterations") or 0))
        for path in (settings.metrics_path, settings.comparison_path, settings.comparison_markdown):
            tracker.log_artifact(path, folder="evaluation")
    return results


def evaluate_split(
    model: SNMN,
    settings: EvaluateConfig,
    task: str,
    split: str,
    device: torch.device,
    training: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], tuple[QuestionTable, list[int]]]:
    """(metrics of one split, (its table, the evaluated rows)); `training` is what the model
    learnt from (model.pt's training_data), for the comparability note."""
    config = model.config
    table = read_question_table(settings.tokens_dir, split, config.num_steps)
    tokens = read_parquet(Path(settings.tokens_dir) / f"{split}.parquet", columns=["position"])
    grid = model_box_grid(table, config.feature_height, config.feature_width)
    dataset = QuestionDataset(table, settings.features_dir, settings.features_storage, device)
    rows = evaluation_rows(dataset.rows_with_features, 0, 1, settings.max_questions)
    questions_path = Path(settings.questions_dir) / f"{settings.dataset}_{split}_questions.json"
    info = stream_json(questions_path, "questions")[0] if questions_path.is_file() else {}
    meter, skipped = _faithfulness_meter(settings, split, table, tokens, grid)
    on_batch = None
    if meter is not None:

        def on_batch(batch: dict[str, torch.Tensor], output: SNMNOutput) -> None:
            attention = output.top_attention.flatten(2).float().softmax(dim=2)  # [B, T, N]
            meter.add(batch["rows"].cpu().numpy(), attention.cpu().numpy())

    if dataset.questions_skipped:
        _say(dataset.skipped_line())
    dataset.require_questions()
    _say(f"{split}: {len(rows)} questions")
    predictions = collect_predictions(
        model, dataset, rows, settings.batch_size, device, grid, on_batch
    )
    questions = {
        "total": len(table),
        "scored": len(rows),
        "skipped_without_features": dataset.questions_skipped,
    }
    section: dict[str, Any] = {
        "split": split,
        "dataset": describe_dataset(info, split, dataset.store.manifest, questions, training),
        "questions": questions,
    }
    if task == "vqa":
        names = {f["index"]: f["name"] for f in info.get("families", []) if "name" in f}
        section["answers"] = vqa_metrics(predictions, table, names)
    else:
        section["boxes"] = ref_metrics(predictions, table)
    section["layout"] = layout_metrics(predictions, table)
    section["module_usage"] = module_usage(predictions)
    section["faithfulness"] = meter.summary() if meter is not None else {"skipped": skipped}
    return section, (table, rows)


def _faithfulness_meter(settings: EvaluateConfig, split: str, table: QuestionTable, tokens, grid):
    """(meter, "") when programs and scenes are at hand, else (None, why not)."""
    if not settings.faithfulness:
        return None, "evaluate.faithfulness is false"
    questions_path = Path(settings.questions_dir) / f"{settings.dataset}_{split}_questions.json"
    scenes_path = Path(settings.scenes_dir) / f"{settings.dataset}_{split}_scenes.json"
    for path in (questions_path, scenes_path):
        if not path.is_file():
            return None, f"{path} not found"
    questions = read_questions(questions_path)
    positions = tokens["position"].to_numpy()
    if positions.size and positions.max() >= len(questions):
        raise DataError(f"{questions_path}: fewer questions than the tokenised {split} split")
    return (
        FaithfulnessMeter(
            programs=[questions[p].program for p in positions],
            scenes={scene.image_index: scene for scene in read_scenes(scenes_path)},
            image_index=table.image_index,
            grid=(grid.grid_height, grid.grid_width),
            image_size=(grid.image_height, grid.image_width),
        ),
        "",
    )


def _merged_dataset(datasets: list[dict[str, Any]]) -> dict[str, Any]:
    reasons = list(dict.fromkeys(r for d in datasets for r in d["reasons"]))
    return {
        "name": " + ".join(dict.fromkeys(d["name"] for d in datasets)),
        "split": " + ".join(d["split"] for d in datasets),
        "comparable": all(d["comparable"] for d in datasets),
        "reasons": reasons,
    }


def _baseline_lines(results: dict[str, Any]) -> list[str]:
    blind = results.get("question_only_baseline")
    if blind is None:
        return []
    snmn = results["vqa"]["answers"]
    lines = [
        "## SNMN next to the question-only baseline (same split)",
        "",
        "| question type | SNMN | question only |",
        "|---|---|---|",
    ]
    for name, entry in [("all", snmn), *snmn["per_type"].items()]:
        other = blind if name == "all" else blind["per_type"].get(name, {})
        lines.append(f"| {name} | {_percent(entry)} | {_percent(other)} |")
    return lines


def _percent(entry: dict[str, Any]) -> str:
    value = entry.get("accuracy")
    return "—" if value is None else f"{100 * value:.1f} ({entry['correct']}/{entry['total']})"


# ---------------------------------------------------------------------------------------------
# MLflow: the run that trained the model
# ---------------------------------------------------------------------------------------------


def training_run(payload: dict[str, Any], run_id: str, project_dir: str | Path):
    """A tracker on the MLflow run that trained the model, or None (with a note) if unknown.

    `run_id` (evaluate.mlflow_run_id) wins; otherwise the run recorded in model.pt by the
    training that wrote it.
    """
    from pipeline.tracking import MlflowTracker, resolve_tracking_uri

    recorded = payload.get("mlflow") or {}
    if run_id:
        try:
            trained = from_dict(Config, payload["config"], where="model.pt config")
        except (ConfigError, KeyError) as error:
            _say(f"not logging: the model config does not load ({error})", "mlflow")
            return None
        uri = resolve_tracking_uri(trained.train.mlflow_tracking_uri, project_dir)
    elif recorded.get("run_id"):
        run_id, uri = recorded["run_id"], recorded["tracking_uri"]
    else:
        _say("not logging: model.pt records no MLflow run (set evaluate.mlflow_run_id)", "mlflow")
        return None
    _say(f"logging to MLflow run {run_id} at {uri}", "mlflow")
    return MlflowTracker(uri, run_id)


def headline_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The few numbers a reader compares across runs, under short names: vqa_accuracy,
    question_only_accuracy (the blind baseline on the same split), vqa_layout_exact (whole
    layouts equal to the expert's), ref_p_at_1, ref_layout_exact, and faithfulness_find /
    _transform / _filter (the share of the module's attention on the objects it should select,
    as a multiple of a uniform map's: 1 = blind); those the model has."""
    vqa, ref = results.get("vqa", {}), results.get("ref", {})
    found = {
        "vqa_accuracy": vqa.get("answers", {}).get("accuracy"),
        "question_only_accuracy": results.get("question_only_baseline", {}).get("accuracy"),
        "vqa_layout_exact": vqa.get("layout", {}).get("exact", {}).get("accuracy"),
        "ref_p_at_1": ref.get("boxes", {}).get("p_at_1"),
        "ref_layout_exact": ref.get("layout", {}).get("exact", {}).get("accuracy"),
    }
    per_module = vqa.get("faithfulness", {}).get("per_module", {})
    for module in HEADLINE_MODULES:
        figures = per_module.get(module, {})
        if figures.get("uniform_attention_on_objects"):
            ratio = figures["attention_on_objects"] / figures["uniform_attention_on_objects"]
            found[f"faithfulness_{module.lower()}"] = ratio
    return {name: float(value) for name, value in found.items() if value is not None}


def log_numbers(tracker, prefix: str, results: dict[str, Any], step: int) -> None:
    """The headline metrics under their short names (vqa_accuracy, ref_p_at_1, ...), which the
    MLflow runs table shows side by side, and every number in `results` as detail named by its
    path under `prefix` (eval.vqa.answers.per_family.count_0.accuracy, ~500 of them)."""
    numbers = {
        key: float(value)
        for key, value in flatten(_indexed(results), prefix=f"{prefix}.").items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    numbers |= headline_metrics(results)
    items = sorted(numbers.items())
    for start in range(0, len(items), 500):  # MLflow takes at most 1000 metrics per batch
        tracker.log_metrics(dict(items[start : start + 500]), step=step)


def _indexed(value: Any) -> Any:
    """Lists become {"1": ..., "2": ...} (steps count from 1) so that flatten reaches them."""
    if isinstance(value, dict):
        return {key: _indexed(item) for key, item in value.items()}
    if isinstance(value, list):
        return {str(i + 1): _indexed(item) for i, item in enumerate(value)}
    return value


def _say(message: str, who: str = "evaluate") -> None:
    print(f"[{who}] {message}", file=sys.stderr, flush=True)
