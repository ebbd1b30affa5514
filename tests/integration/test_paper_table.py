"""`snmn paper-table` for real on tiny data: six settings (scratch ones twice) trained and
evaluated, one MLflow run each in one experiment, the table written; a rerun trains nothing, and a
configuration whose evaluation is gone is done again in its own run.

Ray Train costs about 25 s per training here whatever its length (its controller and worker group
start), so the nine configurations train in this process through `launch.train` with Ray's
`fit` replaced by the training loop itself (as tests/unit/test_tracking.py does); one setting
goes through real Ray Train, killed and redone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.config import Config, EvaluateConfig, PaperTableConfig
from pipeline.evaluation import paper_table
from pipeline.evaluation.paper import PUBLISHED
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from tests.conftest import tiny_config

pytestmark = [pytest.mark.slow]
EXPERIMENT = "paper-table-test"
NAMES = {
    "vqa_gt_layout",
    "vqa_scratch_seed1",
    "vqa_scratch_seed2",
    "loc_gt_layout",
    "loc_scratch_seed1",
    "loc_scratch_seed2",
    "joint_gt_layout",
    "joint_scratch_seed1",
    "joint_scratch_seed2",
}


def recipe(tiny_data: Path, work: Path, **table: object) -> Config:
    """tiny_config with 2 iterations on one Ray Train worker, evaluation of both splits."""
    config = tiny_config(
        tiny_data, work, iterations=2, eval_every=2, checkpoint_every=2, num_workers=1
    )
    evaluation = EvaluateConfig(
        tokens_dir=str(tiny_data / "tokens"),
        features_dir=str(tiny_data / "features"),
        questions_dir=str(tiny_data / "mini-clevr" / "questions"),
        scenes_dir=str(tiny_data / "mini-clevr" / "scenes"),
        vqa_split="val",
        ref_split="loc_val",
        device="cpu",
        question_only_baseline=True,
        baseline_iterations=3,
        baseline_batch_size=8,
    )
    values = {
        "seeds": 2,
        "output_dir": str(work / "paper-table"),
        "table_path": str(work / "reports" / "paper_table.md"),
        "mlflow_experiment": EXPERIMENT,
    }
    return dataclasses.replace(
        config, evaluate=evaluation, paper_table=PaperTableConfig(**(values | table))
    )


@pytest.fixture
def trained_in_process(monkeypatch, one_torch_thread):
    """launch.train's Ray Train `fit` replaced by one train_loop in this process."""

    def fit_here(config, name, tracking, worker_main):
        reporter = LocalReporter(Path(config.train.runs_dir) / name)
        return train_loop(config, WorkerContext(), reporter, tracking)

    monkeypatch.setattr(paper_table.launch.distributed, "fit", fit_here)


def test_six_settings_make_the_table_and_a_rerun_redoes_only_what_is_missing(
    tiny_data, tmp_path, monkeypatch, trained_in_process
):
    from mlflow.tracking import MlflowClient

    config = recipe(tiny_data, tmp_path)
    said: list[str] = []
    first = paper_table.run_paper_table(config, project_dir=tmp_path, say=said.append)
    assert first["configurations"] == dict.fromkeys(NAMES, "trained")
    assert sum(" started " in line for line in said) == len(NAMES)
    assert sum(" finished in " in line and " min" in line for line in said) == len(NAMES)

    client = MlflowClient(tracking_uri=config.train.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    by_name = {run.data.tags.get("paper_configuration"): run for run in runs}
    assert set(by_name) == NAMES | {None}  # one run each, and the summary run
    assert len(runs) == len(NAMES) + 1
    for name in NAMES:
        tags, metrics = by_name[name].data.tags, by_name[name].data.metrics
        scratch = "scratch" in name
        assert tags["task"] == {"vqa": "vqa", "loc": "ref", "joint": "joint"}[name.split("_")[0]]
        assert tags["use_layouts"] == str(not scratch)
        assert tags["seed"] == (name[-1] if scratch else "0")
        assert tags["paper_setting"] == name.split("_seed")[0]
        assert by_name[name].info.status == "FINISHED"
        assert ("ref_p_at_1" in metrics) == (not name.startswith("vqa"))  # its evaluation
        assert ("vqa_accuracy" in metrics) == (not name.startswith("loc"))
    joint = by_name["joint_scratch_seed1"].data.params
    assert joint["train.ref_cell_weight"] == joint["train.ref_offset_weight"] == "0.5"
    [summary] = [run for run in runs if run.data.tags.get("paper_setting") == "summary"]
    logged = {item.path for item in client.list_artifacts(summary.info.run_id)}
    assert {"paper_table.json", "paper_table.md"} <= logged

    table = (tmp_path / "reports" / "paper_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(PUBLISHED)  # the header and one row per published line
    for entry, row in zip(PUBLISHED, rows[1:], strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2:4] == [f"{entry['paper']:.1f}", f"{entry['port']:.1f}"]
        runs_expected = 2 if "scratch" in entry["setting"] else 1
        assert f"({runs_expected} of {runs_expected} runs)" in cells[4], row
        assert "±" in cells[4] and "not run" not in row
        if entry["metric"] == "vqa_accuracy":
            assert cells[6] != "—" and cells[8].count("×") >= 1, row  # question only, Find
    assert "NOT comparable" in table

    def no_training(*arguments, **options):
        raise AssertionError("a finished configuration was trained again")

    said.clear()
    with monkeypatch.context() as patched:
        patched.setattr(paper_table.launch, "train", no_training)
        again = paper_table.run_paper_table(config, project_dir=tmp_path, say=said.append)
    assert again["configurations"] == dict.fromkeys(NAMES, "skipped")
    assert sum(" skipped, " in line for line in said) == len(NAMES)
    assert (tmp_path / "reports" / "paper_table.md").read_text() == table

    # killed before its evaluation was written: done again, in the same MLflow run
    lost = tmp_path / "paper-table" / "loc_scratch_seed2" / "evaluate.json"
    lost.unlink()
    third = paper_table.run_paper_table(config, project_dir=tmp_path, say=said.append)
    assert third["configurations"] == {
        name: "trained" if name == "loc_scratch_seed2" else "skipped" for name in NAMES
    }
    assert lost.is_file()
    assert len(client.search_runs([experiment.experiment_id])) == len(NAMES) + 1


@pytest.mark.ray
def test_a_setting_trains_through_ray_train_and_is_redone_after_a_kill(tiny_data, tmp_path):
    from mlflow.tracking import MlflowClient

    config = recipe(tiny_data, tmp_path, settings=("loc_scratch",), seeds=1)
    first = paper_table.run_paper_table(config, project_dir=tmp_path, say=print)
    assert first["configurations"] == {"loc_scratch_seed1": "trained"}
    folder = tmp_path / "paper-table" / "loc_scratch_seed1"
    assert list((folder / "checkpoints").glob("snmn-ref-*/checkpoint_*"))
    (folder / "evaluate.json").unlink()  # killed between the training and its evaluation
    again = paper_table.run_paper_table(config, project_dir=tmp_path, say=print)
    assert again["configurations"] == {"loc_scratch_seed1": "trained"}
    client = MlflowClient(tracking_uri=config.train.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    [run] = client.search_runs([experiment.experiment_id], "tags.paper_setting = 'loc_scratch'")
    assert run.data.tags["task"] == "ref" and run.data.tags["seed"] == "1"
    assert "ref_p_at_1" in run.data.metrics
    table = (tmp_path / "reports" / "paper_table.md").read_text()
    assert table.count("not run") == 2 * (len(PUBLISHED) - 1)  # ours and best, other rows
