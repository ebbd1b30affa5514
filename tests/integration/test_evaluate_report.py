"""`evaluate` and `visualize` on tiny trained models: exact counts, MLflow, the HTML report."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import Config, EvaluateConfig, ReportConfig
from pipeline.data.datasets import QuestionDataset, read_question_table
from pipeline.evaluation.evaluate import evaluate
from pipeline.report.page import visualize
from pipeline.runtime.artifact import load_trained_model
from pipeline.runtime.inference import accuracy_counts
from pipeline.tracking import resolve_tracking_uri, start_run
from pipeline.training.launch import run_name
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from tests.conftest import tiny_config


def train_with_mlflow_run(tiny_data: Path, work: Path, task: str):
    """A tiny model trained in-process, with the MLflow run `snmn train` would have opened."""
    config = tiny_config(
        tiny_data,
        work,
        model={"task": task},
        iterations=12,
        eval_every=12,
        checkpoint_every=12,
        ema_decay=0.5,
        learning_rate=3e-3,
    )
    uri = resolve_tracking_uri(config.train.mlflow_tracking_uri, work)
    run_id = start_run(uri, "tests", run_name(config), {}, {})
    tracking = {"tracking_uri": uri, "run_id": run_id}
    train_loop(config, WorkerContext(), LocalReporter(work / "checkpoints"), tracking)
    return config, uri, run_id


def settings_for(tiny_data: Path, work: Path, **values) -> EvaluateConfig:
    return EvaluateConfig(
        model_path=str(work / "models" / "model.pt"),
        tokens_dir=str(tiny_data / "tokens"),
        features_dir=str(tiny_data / "features"),
        questions_dir=str(tiny_data / "mini-clevr" / "questions"),
        scenes_dir=str(tiny_data / "mini-clevr" / "scenes"),
        metrics_path=str(work / "metrics" / "evaluate.json"),
        headline_path=str(work / "metrics" / "evaluate_headline.json"),
        comparison_path=str(work / "metrics" / "paper_comparison.json"),
        comparison_markdown=str(work / "reports" / "paper_comparison.md"),
        batch_size=16,  # several batches: a row counted twice or lost would show
        device="cpu",
        **values,
    )


def report_for(tiny_data: Path, work: Path) -> ReportConfig:
    return ReportConfig(
        model_path=str(work / "models" / "model.pt"),
        tokens_dir=str(tiny_data / "tokens"),
        features_dir=str(tiny_data / "features"),
        images_dir=str(tiny_data / "mini-clevr" / "images"),
        curve_path=str(work / "models" / "train_curve.csv"),
        metrics_path=str(work / "metrics" / "evaluate.json"),
        output_dir=str(work / "reports" / "visualize"),
        plots_dir=str(work / "reports" / "plots"),
        num_examples=2,
        candidates=64,
        device="cpu",
    )


def mlflow_run(uri: str, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.get_run(run_id), client


@pytest.fixture(scope="module")
def vqa_run(tiny_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("evaluate_vqa")
    config, uri, run_id = train_with_mlflow_run(tiny_data, work, "vqa")
    settings = settings_for(
        tiny_data, work, question_only_baseline=True, baseline_iterations=20, baseline_batch_size=16
    )
    results = evaluate(settings, project_dir=work)
    return config, settings, results, uri, run_id, work


def test_vqa_counts_are_exact_and_agree_with_the_training_metric(vqa_run, tiny_data):
    config, settings, results, _, _, _ = vqa_run
    assert json.loads(Path(settings.metrics_path).read_text()) == results
    headline = json.loads(Path(settings.headline_path).read_text())
    assert headline["vqa_accuracy"] == results["vqa"]["answers"]["accuracy"]
    find = results["vqa"]["faithfulness"]["per_module"]["Find"]
    ratio = find["attention_on_objects"] / find["uniform_attention_on_objects"]
    assert headline["faithfulness_find"] == pytest.approx(ratio)
    assert headline["question_only_accuracy"] == results["question_only_baseline"]["accuracy"]
    val = read_question_table(tiny_data / "tokens", "val", config.model.num_steps)
    answers = results["vqa"]["answers"]
    assert answers["total"] == answers["questions"] == len(val)
    assert sum(e["total"] for e in answers["per_type"].values()) == len(val)
    assert sum(e["correct"] for e in answers["per_type"].values()) == answers["correct"]
    assert sum(e["total"] for e in answers["per_family"].values()) == len(val)
    expected_types = {t for t in val.question_types}
    assert set(answers["per_type"]) == expected_types

    model, _ = load_trained_model(settings.model_path)
    dataset = QuestionDataset(val, settings.features_dir)
    reference = accuracy_counts(model, dataset, list(range(len(val))), 7, "cpu", val.box_grid)
    assert answers["accuracy"] == pytest.approx(reference["accuracy"])
    layout = results["vqa"]["layout"]
    assert layout["step_total"] == len(val) * config.model.num_steps
    assert layout["step_accuracy"] == pytest.approx(reference["layout_step_accuracy"])
    assert layout["exact"]["accuracy"] == pytest.approx(reference["layout_exact"])
    for step in results["vqa"]["module_usage"]["per_step"]:
        assert sum(step["counts"].values()) == len(val)


def test_faithfulness_and_the_baseline_are_reported(vqa_run, tiny_data):
    _, _, results, _, _, _ = vqa_run
    faithfulness = results["vqa"]["faithfulness"]
    assert faithfulness["objects_from"] == "scene masks"
    assert faithfulness["questions"] == results["vqa"]["answers"]["questions"]
    assert faithfulness["per_module"]["Find"]["steps"] > 0
    for entry in faithfulness["per_module"].values():
        assert 0.0 <= entry["attention_on_objects"] <= 1.0
        assert 0.0 < entry["uniform_attention_on_objects"] < 1.0
    baseline = results["question_only_baseline"]
    assert baseline["total"] == results["vqa"]["answers"]["total"]
    assert 0.0 <= baseline["accuracy"] <= 1.0


def test_comparison_says_which_dataset_and_reaches_mlflow(vqa_run):
    _, settings, results, uri, run_id, _ = vqa_run
    table = json.loads(Path(settings.comparison_path).read_text())
    assert table["dataset"]["comparable"] is False
    mine = [row for row in table["rows"] if row["this_run"] is not None]
    assert [row["setting"] for row in mine] == ["vqa_gt_layout"]
    assert mine[0]["this_run"] == pytest.approx(100 * results["vqa"]["answers"]["accuracy"], 0.01)
    markdown = Path(settings.comparison_markdown).read_text()
    assert "mini-CLEVR" in markdown and "NOT comparable" in markdown
    assert "question only" in markdown

    run, client = mlflow_run(uri, run_id)
    metrics = run.data.metrics
    # the headline, under short names for the runs table; the detail under eval.
    answers, baseline = results["vqa"]["answers"], results["question_only_baseline"]
    assert metrics["vqa_accuracy"] == pytest.approx(answers["accuracy"])
    assert metrics["question_only_accuracy"] == pytest.approx(baseline["accuracy"])
    exact = results["vqa"]["layout"]["exact"]["accuracy"]
    assert metrics["vqa_layout_exact"] == pytest.approx(exact)
    assert not any(key.startswith("ref_") for key in metrics)  # a VQA model has no P@1
    assert metrics["eval.vqa.answers.accuracy"] == pytest.approx(
        results["vqa"]["answers"]["accuracy"]
    )
    assert (
        metrics["eval.vqa.answers.per_type.count.total"]
        == (results["vqa"]["answers"]["per_type"]["count"]["total"])
    )
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "evaluation")}
    assert logged == {"evaluate.json", "paper_comparison.json", "paper_comparison.md"}


def test_the_html_report_shows_two_examples_step_by_step(vqa_run, tiny_data):
    _, _, results, uri, run_id, work = vqa_run
    settings = report_for(tiny_data, work)
    written = visualize(settings, project_dir=work)
    page = Path(written["html"]).read_text()
    assert page.count("<div class='example'") == 2
    names = re.findall(r"<div class='example' id='(vqa_val_\d+)'>", page)
    pngs = {p.stem for p in (Path(settings.output_dir) / "examples").glob("*.png")}
    assert set(names) == pngs and len(pngs) == 2
    for name in names:
        assert (Path(settings.output_dir) / "examples" / f"{name}.png").read_bytes()[:4] == (
            b"\x89PNG"
        )
    rows = [int(name.rsplit("_", 1)[1]) for name in names]
    text = pq.read_table(Path(tiny_data, "tokens", "val.parquet")).to_pydict()
    for row in rows:
        assert text["question"][row].replace("'", "&#x27;") in page
        assert f"true <b>{text['answer'][row]}</b>" in page
    correct, total = results["vqa"]["answers"]["correct"], results["vqa"]["answers"]["total"]
    if 0 < correct < total:  # one answered right and one wrong
        assert page.count("<span class='right'>") == page.count("<span class='wrong'>") == 1
    assert "<th>word attention</th>" in page and "class='word'" in page
    assert re.search(r"<td>(Find|Scene|Transform|Filter|DescribeOne|DescribeTwo|NoOp)", page)
    assert "mini-CLEVR" in page and "NOT comparable" in page
    assert page.count("src='data:image/png;base64,") == 2 + len(written["plots"])
    assert "src='http" not in page and 'src="http' not in page  # self-contained

    plots = Path(settings.plots_dir)
    assert {"training_curves", "accuracy_by_type", "module_usage", "faithfulness"} <= set(
        written["plots"]
    )
    with open(plots / "accuracy_by_type.csv") as handle:
        table = {row["type"]: row for row in csv.DictReader(handle)}
    assert float(table["all"]["snmn"]) == pytest.approx(results["vqa"]["answers"]["accuracy"])
    _, client = mlflow_run(uri, run_id)
    assert "index.html" in {Path(a.path).name for a in client.list_artifacts(run_id, "report")}


def test_ref_model_p_at_1_and_its_report(tiny_data, tmp_path):
    config, uri, run_id = train_with_mlflow_run(tiny_data, tmp_path, "ref")
    settings = settings_for(tiny_data, tmp_path)
    results = evaluate(settings, project_dir=tmp_path)
    assert "vqa" not in results
    boxes = results["ref"]["boxes"]
    loc_val = read_question_table(tiny_data / "tokens", "loc_val", config.model.num_steps)
    assert boxes["total"] == boxes["questions"] == len(loc_val)
    model, _ = load_trained_model(settings.model_path)
    dataset = QuestionDataset(loc_val, settings.features_dir)
    reference = accuracy_counts(
        model, dataset, list(range(len(loc_val))), 5, "cpu", loc_val.box_grid
    )
    assert boxes["p_at_1"] == pytest.approx(reference["p_at_1"])
    metrics = mlflow_run(uri, run_id)[0].data.metrics
    assert metrics["ref_p_at_1"] == pytest.approx(boxes["p_at_1"])
    assert "ref_layout_exact" in metrics and "vqa_accuracy" not in metrics
    assert results["ref"]["faithfulness"]["questions"] == len(loc_val)
    markdown = Path(settings.comparison_markdown).read_text()
    assert "| REF, expert layouts | REF P@1 | 96.0 | 93.2 | **" in markdown

    page = Path(
        visualize(report_for(tiny_data, tmp_path), project_dir=tmp_path)["html"]
    ).read_text()
    assert page.count("<div class='example'") == 2 and "IoU" in page


def test_the_stage_commands_run_from_params_yaml(vqa_run, tiny_data, tmp_path, one_torch_thread):
    from stages.cli import STAGES

    fields = {f.name for f in dataclasses.fields(Config)}
    if not ({"evaluate", "report"} <= fields and {"evaluate", "visualize"} <= set(STAGES)):
        pytest.skip("EvaluateConfig/ReportConfig or the stages are not wired in yet")
    import yaml
    from click.testing import CliRunner

    from stages.cli import cli

    _, _, _, _, _, work = vqa_run
    evaluate_values = dataclasses.asdict(settings_for(tiny_data, work))
    evaluate_values["metrics_path"] = str(tmp_path / "evaluate.json")
    evaluate_values["headline_path"] = str(tmp_path / "evaluate_headline.json")
    report_values = dataclasses.asdict(report_for(tiny_data, work))
    report_values["output_dir"] = str(tmp_path / "visualize")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": evaluate_values, "report": report_values}))
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", "--params", str(params)], catch_exceptions=False)
    assert result.exit_code == 0 and "vqa_accuracy" in result.output
    result = runner.invoke(cli, ["visualize", "--params", str(params)], catch_exceptions=False)
    assert result.exit_code == 0
    assert (tmp_path / "visualize" / "index.html").is_file()
