"""Starting a training: name the run, open its MLflow run, hand it to Ray Train, close it.

`snmn train` on "What color is the large cube?"-style data names the run after the params and the
exact inputs (tokens and feature manifests): rerunning after a kill finds the same name and resumes
from the latest checkpoint (Ray Train does that for a known name), and it logs into the same MLflow
run; other params or other data start a fresh run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pipeline import distributed
from pipeline.config import Config, flatten, to_dict
from pipeline.shards import manifest_path
from pipeline.tracking import MlflowTracker, git_commit, resolve_tracking_uri, start_run

RUN_ID_FILE = "mlflow_run_id.txt"


def run_name(config: Config) -> str:
    """snmn-<task>-<hash of params and input files>."""
    train = config.train
    digest = hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode())
    tokens = Path(train.tokens_dir)
    splits = [
        train.vqa_train_split,
        train.vqa_val_split,
        train.ref_train_split,
        train.ref_val_split,
    ]
    inputs = [tokens / "vocab_question.json", tokens / "vocab_answer.json"]
    for split in splits:
        inputs += [tokens / f"{split}.parquet", manifest_path(train.features_dir, split)]
    for path in inputs:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return f"snmn-{config.model.task}-{digest.hexdigest()[:10]}"


def with_absolute_paths(config: Config, project_dir: str | Path) -> Config:
    """Ray workers run in another working directory: give them absolute data and output paths."""
    train = config.train
    absolute = {
        name: str((Path(project_dir) / getattr(train, name)).resolve())
        for name in ("tokens_dir", "features_dir", "output_dir", "runs_dir")
    }
    return dataclasses.replace(config, train=dataclasses.replace(train, **absolute))


def train(config: Config, project_dir: str | Path = ".") -> dict[str, Any]:
    """Train through Ray Train (local Ray or the cluster at train.ray_address); last metrics."""
    name = run_name(config)
    config = with_absolute_paths(config, project_dir)
    run_folder = Path(config.train.runs_dir).resolve() / name
    tracking_uri = resolve_tracking_uri(config.train.mlflow_tracking_uri, project_dir)
    run_id_file = run_folder / RUN_ID_FILE
    if run_id_file.is_file():
        run_id = run_id_file.read_text().strip()
        print(f"[train] continuing run {name} (MLflow run {run_id})", file=sys.stderr)
    else:
        run_id = start_run(
            tracking_uri,
            config.train.mlflow_experiment,
            run_name=name,
            params=flatten(to_dict(config)),
            tags={
                "git_commit": git_commit(project_dir),
                "params_fingerprint": config.fingerprint(),
                "task": config.model.task,
                "use_layouts": str(config.train.use_layouts),
            },
        )
        run_folder.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run_id + "\n")
        print(f"[train] run {name}, MLflow run {run_id} at {tracking_uri}", file=sys.stderr)
    tracking = {"tracking_uri": tracking_uri, "run_id": run_id}
    tracker = MlflowTracker(tracking_uri, run_id)
    try:
        metrics = distributed.fit(config, name, tracking)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return metrics
