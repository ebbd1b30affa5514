"""The paper's table on our data: six settings trained and evaluated by one command.

The paper answers "How many cubes are there?" right 96.6% of the time with expert layouts and
93.0% without them (the best of 4 runs); it reports the same for CLEVR-Ref ("the large cube left
of the red sphere", P@1) and for a model trained on both. `run_paper_table` (the command
`snmn paper-table`) trains each of those six settings from one params file, as `snmn train` and
`snmn evaluate` would, and sets the results beside the published numbers:

| setting | model.task | train.use_layouts | runs |
|---|---|---|---|
| vqa_gt_layout / vqa_scratch | vqa | true / false | 1 / paper_table.seeds |
| loc_gt_layout / loc_scratch | ref | true / false | 1 / paper_table.seeds |
| joint_gt_layout / joint_scratch | joint | true / false | 1 / paper_table.seeds |

A configuration is one setting with one seed, named `vqa_gt_layout` or `loc_scratch_seed2`: its
Config is the recipe's with model.task, train.use_layouts and train.seed changed (joint runs
weigh the CLEVR-Ref losses 0.5 / 0.5, as the official joint configs), and with its own folder,
paper_table.output_dir/<name>/: models/ (model.pt), checkpoints/ (Ray Train's), evaluate.json,
evaluate_headline.json, paper_comparison.{json,md}. Settings with expert layouts run once, at the
recipe's train.seed; settings without run with train.seed 1, 2, ..., paper_table.seeds, since a
run from scratch may or may not find good layouts (the paper's scratch figures are the best of
4 trials).

Killed half-way, the command is run again: a configuration whose evaluate.json was written by a
model of the same params is skipped; any other is trained (its training resumes from its last
checkpoint: the run name, and so the checkpoint folder and the MLflow run, depend only on the
configuration's params and data) and evaluated.

MLflow: every configuration is one run in the experiment paper_table.mlflow_experiment, tagged
task, use_layouts and seed by the training and paper_setting here; its evaluation is logged into
the same run. The table itself is logged with `mlflow.log_table` (paper_table.json) and as
Markdown on one more run of that experiment, named "paper-table" and tagged
paper_setting=summary, which every rerun updates.

The table has one row per published (setting, metric): our figure as the mean ± half the range
((max - min) / 2) over the setting's runs and the best run, next to the paper's and the public
PyTorch port's; then, from the same runs (means), the question-only baseline on the VQA split,
how often the whole layout equals the expert's, and the faithfulness of Find / Transform / Filter
(the share of their attention on the objects they should select, as a multiple of a uniform map's;
measured on VQA questions only). A setting without a finished run reads "not run".
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import Config, EvaluateConfig, PaperTableConfig, flatten, to_dict
from pipeline.errors import ConfigError
from pipeline.evaluation.evaluate import evaluate, headline_metrics
from pipeline.evaluation.paper import (
    METRIC_NAMES,
    PAPER_DATASET,
    PUBLISHED,
    SETTING_NAMES,
    SOURCES,
)
from pipeline.tables import write_atomic
from pipeline.training import launch

TASKS = {"vqa": "vqa", "loc": "ref", "joint": "joint"}  # setting prefix → model.task
JOINT_REF_WEIGHT = 0.5  # train.ref_cell_weight and ref_offset_weight of the official joint configs
SUMMARY_RUN_FILE = "mlflow_summary_run_id.txt"
FAITHFULNESS = ("faithfulness_find", "faithfulness_transform", "faithfulness_filter")


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One training and evaluation of the table: `loc_scratch_seed2` is setting loc_scratch
    (model.task ref, train.use_layouts false) at train.seed 2, in its own folder."""

    name: str
    setting: str
    seed: int
    config: Config  # the recipe with task, layouts, seed, folders and experiment changed
    folder: Path  # paper_table.output_dir/<name>

    @property
    def evaluation_path(self) -> Path:
        return Path(self.config.evaluate.metrics_path)


def configurations(recipe: Config) -> list[Configuration]:
    """Every configuration paper_table.settings asks for, in the table's order."""
    table = recipe.paper_table
    found = []
    for setting in table.settings:
        if setting.endswith("_gt_layout"):
            found.append(configuration(recipe, setting, recipe.train.seed, setting))
        else:
            for seed in range(1, table.seeds + 1):
                found.append(configuration(recipe, setting, seed, f"{setting}_seed{seed}"))
    return found


def configuration(recipe: Config, setting: str, seed: int, name: str) -> Configuration:
    """The recipe turned into one configuration of `setting` at train.seed `seed`."""
    prefix, layouts = setting.split("_", 1)
    task, use_layouts = TASKS[prefix], layouts == "gt_layout"
    folder = Path(recipe.paper_table.output_dir) / name
    train = dataclasses.replace(
        recipe.train,
        use_layouts=use_layouts,
        seed=seed,
        output_dir=str(folder / "models"),
        runs_dir=str(folder / "checkpoints"),
        mlflow_experiment=recipe.paper_table.mlflow_experiment,
    )
    if task == "joint":
        train = dataclasses.replace(
            train, ref_cell_weight=JOINT_REF_WEIGHT, ref_offset_weight=JOINT_REF_WEIGHT
        )
    evaluation = dataclasses.replace(
        recipe.evaluate,
        model_path=str(folder / "models" / "model.pt"),
        metrics_path=str(folder / "evaluate.json"),
        headline_path=str(folder / "evaluate_headline.json"),
        comparison_path=str(folder / "paper_comparison.json"),
        comparison_markdown=str(folder / "paper_comparison.md"),
        mlflow_run_id="",  # the run recorded in model.pt: this configuration's training
    )
    config = dataclasses.replace(
        recipe,
        model=dataclasses.replace(recipe.model, task=task),
        train=train,
        evaluate=evaluation,
    )
    return Configuration(name, setting, seed, config, folder)


def check_splits(recipe: Config) -> None:
    """ConfigError naming the key when a setting asked for has no split to train or score on."""
    tasks = {TASKS[setting.split("_", 1)[0]] for setting in recipe.paper_table.settings}
    needs = []
    if tasks & {"vqa", "joint"}:
        needs += ["train.vqa_train_split", "evaluate.vqa_split"]
    if tasks & {"ref", "joint"}:
        needs += ["train.ref_train_split", "evaluate.ref_split"]
    for key in needs:
        section, name = key.split(".")
        if not getattr(getattr(recipe, section), name):
            raise ConfigError(f"{key}: empty, but paper_table.settings trains a task that needs it")


def finished(item: Configuration, project_dir: str | Path) -> bool:
    """True when the configuration's evaluate.json is there and scored a model of its params
    (the fingerprint model.pt records: the training's params, its paths made absolute)."""
    path = Path(project_dir) / item.evaluation_path
    if not path.is_file():
        return False
    try:
        recorded = json.loads(path.read_text())["model"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == launch.with_absolute_paths(item.config, project_dir).fingerprint()


def run_paper_table(
    recipe: Config,
    project_dir: str | Path = ".",
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every configuration not finished yet, then write and log the table.

    Returns {"configurations": {name: "trained" | "skipped"}, "rows": the table's rows}.
    """
    say = say or _say
    check_splits(recipe)
    items = configurations(recipe)
    done: dict[str, str] = {}
    for number, item in enumerate(items, 1):
        where = f"{number}/{len(items)} {item.name}"
        if finished(item, project_dir):
            say(f"{where}: skipped, {item.evaluation_path} is there")
            done[item.name] = "skipped"
            continue
        start = time.monotonic()
        say(f"{where}: started (task {item.config.model.task}, seed {item.seed})")
        launch.train(item.config, project_dir)
        evaluate(_in_project(item.config.evaluate, project_dir), project_dir)
        tag_setting(item, project_dir)
        minutes = (time.monotonic() - start) / 60
        say(f"{where}: finished in {minutes:.1f} min, {item.evaluation_path}")
        done[item.name] = "trained"
    evaluations = finished_evaluations(items, project_dir)
    results = collect_results(items, evaluations)
    rows = build_table(results, Counter(item.setting for item in items))
    markdown = table_markdown(rows, recipe.paper_table, dataset_notes(evaluations))
    table_path = Path(project_dir) / recipe.paper_table.table_path
    write_atomic(table_path, lambda temporary: temporary.write_text(markdown))
    say(f"wrote {recipe.paper_table.table_path}")
    log_summary(recipe, rows, table_path, project_dir)
    return {"configurations": done, "rows": rows}


def _in_project(settings: EvaluateConfig, project_dir: str | Path) -> EvaluateConfig:
    """evaluate's paths under `project_dir` (it reads and writes relative to the working dir)."""
    names = ("model_path", "tokens_dir", "features_dir", "questions_dir", "scenes_dir")
    names += ("metrics_path", "headline_path", "comparison_path", "comparison_markdown")
    return dataclasses.replace(
        settings, **{name: str(Path(project_dir) / getattr(settings, name)) for name in names}
    )


def tag_setting(item: Configuration, project_dir: str | Path) -> None:
    """Tag the configuration's MLflow run (the one its model.pt records) with its setting."""
    from pipeline.tracking import MlflowTracker
    from pipeline.training.launch import RUN_ID_FILE, hash_inputs, run_name

    config = item.config
    folder = Path(project_dir) / config.train.runs_dir / run_name(config, hash_inputs(config))
    run_id = (folder / RUN_ID_FILE).read_text().strip()
    uri = launch.resolve_tracking_uri(config.train.mlflow_tracking_uri, project_dir)
    tracker = MlflowTracker(uri, run_id)
    tracker.client.set_tag(run_id, "paper_setting", item.setting)
    tracker.client.set_tag(run_id, "paper_configuration", item.name)


def finished_evaluations(
    items: list[Configuration], project_dir: str | Path
) -> list[tuple[Configuration, dict[str, Any]]]:
    """(configuration, its evaluate.json) of every finished configuration, each read once."""
    return [
        (item, json.loads((Path(project_dir) / item.evaluation_path).read_text()))
        for item in items
        if finished(item, project_dir)
    ]


def collect_results(
    items: list[Configuration], evaluations: list[tuple[Configuration, dict[str, Any]]]
) -> dict[str, list[dict[str, float]]]:
    """{setting: [the headline figures of each finished run]} (evaluate.headline_metrics)."""
    results: dict[str, list[dict[str, float]]] = {item.setting: [] for item in items}
    for item, evaluation in evaluations:
        results[item.setting].append({"seed": item.seed, **headline_metrics(evaluation)})
    return results


def dataset_notes(evaluations: list[tuple[Configuration, dict[str, Any]]]) -> list[str]:
    """Why the evaluations do not compare with the paper (mini-CLEVR, ...), without repeats."""
    notes: dict[str, None] = {}
    for _, evaluation in evaluations:
        notes |= dict.fromkeys(evaluation.get("dataset", {}).get("reasons", []))
    return list(notes)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def seed_list(seeds: int) -> str:
    """ "1", "1 and 2", "1, 2 and 3": the seeds of the settings without layouts."""
    names = [str(seed) for seed in range(1, seeds + 1)]
    return names[0] if seeds == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def spread(values: list[float]) -> dict[str, float | int] | None:
    """{"mean", "spread" (half the range, (max - min) / 2), "best" (max), "runs"} or None."""
    if not values:
        return None
    return {
        "mean": sum(values) / len(values),
        "spread": (max(values) - min(values)) / 2,
        "best": max(values),
        "runs": len(values),
    }


def build_table(
    results: dict[str, list[dict[str, float]]], expected: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """One row per published (setting, metric): paper, port and ours over the setting's runs.

    `results` maps a setting (vqa_scratch) to the headline figures of each of its runs
    (fractions: vqa_accuracy 0.71; ratios: faithfulness_find 6.0; "seed" says which run);
    `expected` how many runs each setting should have. Percentages in the rows are 0-100.
    Columns beside the metric come from the same runs, on the metric's split: the question-only
    baseline (VQA rows), whole layouts equal to the expert's (vqa_ or ref_layout_exact) and
    faithfulness (VQA rows: measured on VQA questions).
    """
    expected = expected or {}
    rows = []
    for entry in PUBLISHED:
        setting, metric = entry["setting"], entry["metric"]
        runs = [run for run in results.get(setting, []) if metric in run]
        vqa_row = metric == "vqa_accuracy"
        best = max(runs, key=lambda run: run[metric]) if runs else {}
        layout = "vqa_layout_exact" if vqa_row else "ref_layout_exact"
        rows.append(
            {
                "setting": setting,
                "setting_name": SETTING_NAMES[setting],
                "metric": metric,
                "metric_name": METRIC_NAMES[metric],
                "paper": entry["paper"],
                "port": entry["port"],
                "ours": _over_runs(runs, metric, 100.0),  # None: not run
                "best_seed": best.get("seed"),
                "expected_runs": expected.get(setting, 0),
                "question_only": (
                    _over_runs(runs, "question_only_accuracy", 100.0) if vqa_row else None
                ),
                "layout_exact": _over_runs(runs, layout, 100.0),
                "faithfulness": {
                    name: _over_runs(runs, name) if vqa_row else None for name in FAITHFULNESS
                },
            }
        )
    return rows


def _over_runs(
    runs: list[dict[str, float]], name: str, scale: float = 1.0
) -> dict[str, float | int] | None:
    """spread() of figure `name` (times `scale`) over the runs that have it."""
    return spread([scale * run[name] for run in runs if name in run])


def table_markdown(
    rows: list[dict[str, Any]], settings: PaperTableConfig, notes: list[str] | None = None
) -> str:
    """The table as a Markdown document (reports/paper_table.md)."""
    lines = [
        "# SNMN: the paper's table, trained here",
        "",
        "Written by `snmn paper-table`. Our figures: the mean ± half the range ((max − min) / 2) "
        "over a setting's runs, and the best run; settings with expert layouts run once, "
        f"settings without them with train.seed {seed_list(settings.seeds)}. "
        "Question-only, layouts and faithfulness: means over the same runs, on the metric's "
        "split (faithfulness: VQA questions).",
        "",
    ]
    if notes:
        lines += ["**NOT comparable** with the published numbers: " + "; ".join(notes) + ".", ""]
    lines += [
        f"Published numbers: {PAPER_DATASET}.",
        "",
        "| setting | metric | paper | PyTorch port | ours (mean ± spread) | ours (best) "
        "| question only | layout = expert's | faithfulness Find / Transform / Filter |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = row["ours"]
        if ours is None:
            mine, best = "not run", "not run"
        else:
            runs = f"{ours['runs']} of {row['expected_runs']}" if row["expected_runs"] else ""
            mine = f"**{ours['mean']:.1f} ± {ours['spread']:.1f}** ({runs} runs)"
            best = f"{ours['best']:.1f} (seed {row['best_seed']})"
        faithful = row["faithfulness"]
        figures = [faithful[name] for name in FAITHFULNESS]
        faith = (
            " / ".join("—" if f is None else f"{f['mean']:.1f}×" for f in figures)
            if any(figures)
            else "—"
        )
        lines.append(
            f"| {row['setting_name']} | {row['metric_name']} | {row['paper']:.1f} | "
            f"{row['port']:.1f} | {mine} | {best} | {_mean(row['question_only'])} | "
            f"{_mean(row['layout_exact'])} | {faith} |"
        )
    lines += ["", "Sources:", ""]
    lines += [f"- {name}: {text}" for name, text in SOURCES.items()]
    return "\n".join(lines) + "\n"


def _mean(figure: dict[str, Any] | None) -> str:
    return "—" if figure is None else f"{figure['mean']:.1f}"


def table_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows as columns of plain values, for mlflow.log_table (None where not run)."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        ours = row["ours"] or {}
        values = {
            name: row[name]
            for name in ("setting", "setting_name", "metric", "paper", "port", "expected_runs")
        }
        values |= {f"ours_{name}": ours.get(name) for name in ("mean", "spread", "best", "runs")}
        values["best_seed"] = row["best_seed"]
        for name in ("question_only", "layout_exact"):
            values[name] = (row[name] or {}).get("mean")
        for name, figure in row["faithfulness"].items():
            values[name] = (figure or {}).get("mean")
        for name, value in values.items():
            columns.setdefault(name, []).append(value)
    return columns


def log_summary(
    recipe: Config, rows: list[dict[str, Any]], table_path: Path, project_dir: str | Path
) -> None:
    """The table on the experiment's summary run (made once, its id kept in output_dir)."""
    from pipeline.tracking import MlflowTracker, resolve_tracking_uri, source_tags, start_run

    uri = resolve_tracking_uri(recipe.train.mlflow_tracking_uri, project_dir)
    id_file = Path(project_dir) / recipe.paper_table.output_dir / SUMMARY_RUN_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = start_run(
            uri,
            recipe.paper_table.mlflow_experiment,
            run_name="paper-table",
            params=flatten({"paper_table": to_dict(recipe.paper_table)}),
            tags={**source_tags(project_dir, "snmn paper-table"), "paper_setting": "summary"},
        )
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    tracker = MlflowTracker(uri, run_id)
    tracker.client.log_table(run_id, data=table_columns(rows), artifact_file="paper_table.json")
    tracker.log_artifact(table_path)
    tracker.finish("FINISHED")


def _say(message: str) -> None:
    print(f"[paper-table] {message}", file=sys.stderr, flush=True)
