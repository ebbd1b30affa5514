"""The MLflow run of a training reads well in `mlflow ui`: model-training experiment, source tags,
dataset inputs with digests, and the headline metrics apart from the ~500 detail ones.

Everything goes through a real MLflow store (SQLite in tmp_path) and is read back with
MlflowClient, as the UI reads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from pipeline.evaluation.evaluate import log_numbers
from pipeline.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    DatasetRecord,
    source_tags,
    start_run,
)
from pipeline.training import launch
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from tests.conftest import REPO, tiny_config


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def dataset_inputs(run) -> dict[str, tuple[str, str, dict]]:
    """name → (digest, context, profile) of a run's dataset inputs."""
    found = {}
    for entry in run.inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in entry.tags}["mlflow.data.context"]
        found[entry.dataset.name] = (
            entry.dataset.digest,
            context,
            json.loads(entry.dataset.profile),
        )
    return found


def test_start_run_marks_the_experiment_and_logs_datasets_and_source(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train = DatasetRecord("CLEVR train", "0123456789", "training", "/data/tokens", {"images": 7})
    val = DatasetRecord("CLEVR val", "abcdef0123", "validation", "/data/tokens", {"images": 3})
    tags = source_tags(REPO, "snmn train") | {"task": "vqa"}
    run_id = start_run(uri, "snmn", "snmn-vqa-0", {"train.iterations": 6}, tags, [train, val])

    client = client_for(uri)
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING == "custom_model_development"
    assert run.data.tags["mlflow.source.name"] == "snmn train"
    assert run.data.tags["mlflow.source.type"] == "LOCAL"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clone, a developer's tree)
        assert run.data.tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert run.data.tags["task"] == "vqa" and run.data.params["train.iterations"] == "6"
    assert dataset_inputs(run) == {
        "CLEVR train": ("0123456789", "training", {"images": 7}),
        "CLEVR val": ("abcdef0123", "validation", {"images": 3}),
    }


def test_an_older_experiment_is_marked_once_and_a_chosen_kind_stays(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    older = client.create_experiment("snmn")  # made before runs carried the kind
    chosen = client.create_experiment("mine", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    start_run(uri, "snmn", "a", {}, {})
    start_run(uri, "mine", "b", {}, {})
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


class RecordingTracker:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics |= metrics


def test_headline_metrics_have_short_names_and_the_detail_a_prefix():
    exact = {"correct": 3, "total": 10, "accuracy": 0.3}
    results = {
        "vqa": {
            "answers": {"accuracy": 0.75, "per_family": {"count_0": {"accuracy": 0.5}}},
            "layout": {"exact": exact, "per_step": [1.0, 0.9]},
        },
        "question_only_baseline": {"accuracy": 0.4},
        "ref": {"boxes": {"p_at_1": None}, "layout": {"exact": exact}},
    }
    tracker = RecordingTracker()
    log_numbers(tracker, "eval", results, step=6)
    headline = {key: value for key, value in tracker.metrics.items() if "." not in key}
    assert headline == {
        "vqa_accuracy": 0.75,
        "question_only_accuracy": 0.4,
        "vqa_layout_exact": 0.3,
        "ref_layout_exact": 0.3,  # no P@1: nothing to count is no number, not 0
    }
    assert tracker.metrics["eval.vqa.answers.per_family.count_0.accuracy"] == 0.5
    assert tracker.metrics["eval.vqa.layout.per_step.2"] == 0.9


def old_run_name(config) -> str:
    """The run name as it was before the dataset digests: renaming would stop resumes."""
    train = config.train
    digest = hashlib.sha256(config.fingerprint().encode())
    tokens = Path(train.tokens_dir)
    inputs = [tokens / "vocab_question.json", tokens / "vocab_answer.json"]
    for split in (
        train.vqa_train_split,
        train.vqa_val_split,
        train.ref_train_split,
        train.ref_val_split,
    ):
        features = Path(train.features_dir) / split / "manifest.json"
        inputs += [tokens / f"{split}.parquet", features]
    for path in inputs:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return f"snmn-{config.model.task}-{digest.hexdigest()[:10]}"


def split_digest(tiny_data: Path, split: str) -> str:
    digest = hashlib.sha256()
    for path in (
        tiny_data / "tokens" / "vocab_question.json",
        tiny_data / "tokens" / "vocab_answer.json",
        tiny_data / "tokens" / f"{split}.parquet",
        tiny_data / "features" / split / "manifest.json",
    ):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


@pytest.fixture
def trained_here(tiny_data, tmp_path, monkeypatch, one_torch_thread, capsys):
    """`launch.train` as `snmn train` runs it, the Ray Train workers replaced by one in-process
    train_loop; then `evaluate` with the question-only baseline logs into the same run."""
    from pipeline.config import EvaluateConfig
    from pipeline.evaluation.evaluate import evaluate

    def fit_here(config, name, tracking, worker_main):
        reporter = LocalReporter(Path(config.train.runs_dir) / name)
        train_loop(config, WorkerContext(), reporter, tracking)
        return {}

    monkeypatch.setattr(launch.distributed, "fit", fit_here)
    config = tiny_config(tiny_data, tmp_path, iterations=2, eval_every=2, checkpoint_every=2)
    questions = str(tiny_data / "mini-clevr" / "questions")
    config = dataclasses.replace(
        config, tokenize=dataclasses.replace(config.tokenize, questions_dir=questions)
    )
    launch.train(config, project_dir=REPO)
    said = capsys.readouterr().err
    evaluate(
        EvaluateConfig(
            model_path=str(tmp_path / "models" / "model.pt"),
            tokens_dir=str(tiny_data / "tokens"),
            features_dir=str(tiny_data / "features"),
            questions_dir=questions,
            scenes_dir=str(tiny_data / "mini-clevr" / "scenes"),
            metrics_path=str(tmp_path / "metrics" / "evaluate.json"),
            headline_path=str(tmp_path / "metrics" / "evaluate_headline.json"),
            comparison_path=str(tmp_path / "metrics" / "paper_comparison.json"),
            comparison_markdown=str(tmp_path / "reports" / "paper_comparison.md"),
            device="cpu",
            faithfulness=False,
            question_only_baseline=True,
            baseline_iterations=5,
            baseline_batch_size=16,
        ),
        project_dir=tmp_path,
    )
    return config, tmp_path, said


def test_snmn_train_opens_a_run_that_reads_well_in_the_ui(trained_here, tiny_data):
    config, work, said = trained_here
    uri = config.train.mlflow_tracking_uri
    client = client_for(uri)
    experiment = client.get_experiment_by_name(config.train.mlflow_experiment)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    [run] = client.search_runs([experiment.experiment_id])
    # MLflow 3.17's UI opens on the runs table only when asked to: the line says where
    page = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
    assert f"[train] runs table: {page}?workflowType=machine_learning once `mlflow ui" in said
    assert run.info.run_name == launch.run_name(config) == old_run_name(config)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.name"] == "snmn train"
    assert run.data.tags["mlflow.source.type"] == "LOCAL"
    assert run.data.tags["git_commit"].startswith(run.data.tags["mlflow.source.git.commit"])

    val_questions = launch.pq.read_metadata(tiny_data / "tokens" / "val.parquet").num_rows
    inputs = dataset_inputs(run)
    assert set(inputs) == {"mini-CLEVR train", "mini-CLEVR val"}
    assert inputs["mini-CLEVR train"][:2] == (split_digest(tiny_data, "train"), "training")
    assert inputs["mini-CLEVR val"] == (
        split_digest(tiny_data, "val"),
        "validation",
        {"images": 16, "questions": val_questions},
    )

    metrics = run.data.metrics
    headline = {"vqa_accuracy", "question_only_accuracy", "vqa_layout_exact"}
    assert headline <= set(metrics)
    assert "val_vqa_accuracy" in metrics  # the training's last validation, beside them
    evaluated = json.loads((work / "metrics" / "evaluate.json").read_text())
    assert metrics["vqa_accuracy"] == pytest.approx(evaluated["vqa"]["answers"]["accuracy"])
    assert metrics["question_only_accuracy"] == pytest.approx(
        evaluated["question_only_baseline"]["accuracy"]
    )
    assert len([key for key in metrics if key.startswith("eval.")]) > 50  # the detail


def test_the_dataset_is_named_from_the_version_tokenize_recorded(tiny_data, tmp_path):
    import pyarrow.parquet as pq

    config = tiny_config(tiny_data, tmp_path)
    assert launch.dataset_name(config, tmp_path) == "mini-CLEVR"  # tokenize wrote its version
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, tokens_dir=str(tokens))
    )
    assert launch.dataset_name(config, tmp_path) == "unknown"  # no tokens at hand
    table = pq.read_table(tiny_data / "tokens" / "train.parquet")
    written = json.loads(table.schema.metadata[b"snmn"])
    real = {**table.schema.metadata, b"snmn": json.dumps({**written, "dataset_version": "1.0"})}
    pq.write_table(table.replace_schema_metadata(real), tokens / "train.parquet")
    assert launch.dataset_name(config, tmp_path) == "CLEVR"
