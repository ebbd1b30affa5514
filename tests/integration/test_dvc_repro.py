"""A real `dvc repro` of the whole pipeline on a tiny configuration, in a fresh copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.ray]
VENV_BIN = Path(sys.executable).parent


def copy_project(target: Path) -> None:
    """The files git would see (tracked and untracked-not-ignored), in a new git repository."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=target, check=True)
    subprocess.run(git + ["add", "-A"], cwd=target, check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], cwd=target, check=True)


def tiny_params(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    params["generate"].update(
        num_images={"train": 40, "val": 16, "test": 4}, workers=1, questions_per_image=4
    )
    params["pretrain"].update(
        input_height=64, input_width=64, epochs=1, holdout_images=4, batch_size=8
    )
    params["extract"].update(
        backbone="resnet18",
        input_height=64,
        input_width=64,
        decode_workers=0,
        calibration_images=16,
    )
    params["model"].update(TINY_MODEL)
    params["train"].update(
        iterations=4,
        batch_size=8,
        log_every=2,
        eval_every=4,
        checkpoint_every=2,
        warmup_iterations=1,
        curriculum_iterations=[2],
        curriculum_max_modules=[3],
    )
    params["evaluate"].update(baseline_iterations=5, baseline_batch_size=8)
    params["report"].update(num_examples=2, candidates=16)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(VENV_BIN / "dvc"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_dvc_repro_runs_every_stage_then_is_up_to_date(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    tiny_params(project / "params.yaml")

    first = dvc(["repro"], project)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-5000:]
    stages = (
        "generate",
        "tokenize",
        "pretrain-backbone",
        "extract",
        "probe",
        "train",
        "evaluate",
        "report",
    )
    for stage in stages:
        assert f"Running stage '{stage}'" in log

    assert (project / "models" / "model.pt").is_file()
    probe = json.loads((project / "metrics" / "probe_val.json").read_text())
    assert set(probe["probe"]) == {"color", "shape", "material", "size"}, probe
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    assert evaluation["dataset"]["name"]
    assert (project / "reports" / "visualize" / "index.html").is_file()
    assert (project / "mlflow.db").is_file()  # the default tracking store, in the project
    shown = dvc(["metrics", "show", "--json"], project)
    assert shown.returncode == 0, shown.stderr[-3000:]
    files = {name: found["data"] for name, found in json.loads(shown.stdout)[""]["data"].items()}
    # the headline only: a handful of columns, every other figure in files that are not metrics
    assert set(files) == {"metrics/evaluate_headline.json", "metrics/probe_headline.json"}
    headline = files["metrics/evaluate_headline.json"]
    assert headline["vqa_accuracy"] == evaluation["vqa"]["answers"]["accuracy"]
    assert {"question_only_accuracy", "vqa_layout_exact", "faithfulness_find"} <= set(headline)
    assert len(headline) <= 10
    assert files["metrics/probe_headline.json"] == {
        f"probe_{name}": row["accuracy"] for name, row in probe["probe"].items()
    }

    second = dvc(["repro"], project)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Running stage" not in second.stdout
