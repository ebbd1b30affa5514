"""The MLflow seam: one run per training, logged by rank 0 only, browsable with `mlflow ui`.

When SNMN trains on "Are there more cubes than spheres?" and 700k other questions, the driver opens
one MLflow run (params flattened from params.yaml, tags with the git commit and the params
fingerprint) and hands its run id to the workers; rank 0 logs metrics, artifacts and the final
model into it; other ranks get a NullTracker. mlflow is imported only inside this file's functions,
so `import pipeline` and the unit tests never need it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    """What the training loop may log; the loop never sees MLflow itself."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: str | Path, folder: str | None = None) -> None: ...
    def log_text(self, text: str, file_name: str) -> None: ...
    def log_model(self, model: Any, name: str) -> None: ...


class NullTracker:
    """The tracker of every rank but 0: logs nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def log_text(self, text: str, file_name: str) -> None:
        pass

    def log_model(self, model: Any, name: str) -> None:
        pass


class MlflowTracker:
    """Logs into an existing MLflow run (created by the driver with `start_run`)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def log_text(self, text: str, file_name: str) -> None:
        self.client.log_text(self.run_id, text, file_name)

    def log_model(self, model: Any, name: str) -> None:
        import mlflow
        import mlflow.pytorch

        with global_tracking_uri(self.tracking_uri), mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(
                model,
                name=name,
                serialization_format="pickle",
                pip_requirements=["torch==2.14.1", "numpy"],
            )

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI (and $MLFLOW_TRACKING_URI) at `uri`, then back."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def resolve_tracking_uri(configured: str, project_dir: str | Path) -> str:
    """params value, else $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db; always absolute.

    Ray workers change their working directory, so a relative SQLite path would point elsewhere.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(Path(project_dir) / uri[len('sqlite:///') :]).resolve()}"
    if "://" not in uri:  # a bare folder: MLflow's file store
        return Path(project_dir, uri).resolve().as_uri()
    return uri


def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
) -> str:
    """Create the run on the driver; returns its id for the workers."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [(key, str(value)[:6000]) for key, value in sorted(params.items())]
    for start in range(0, len(items), 100):
        chunk = [Param(key, value) for key, value in items[start : start + 100]]
        client.log_batch(run.info.run_id, params=chunk)
    return run.info.run_id


def git_commit(project_dir: str | Path) -> str:
    """The checked-out commit (with '-dirty' when the tree has changes), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_dir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_dir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def download_artifact(run_id: str, artifact: str, folder: Path, tracking_uri: str) -> Path:
    """The local copy of a run's artifact (model.pt for the demo), downloaded into `folder`."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact, dst_path=str(folder), tracking_uri=tracking_uri
    )
    return Path(local)


def registered_model_run(reference: str, tracking_uri: str) -> str:
    """The run that logged a registered model: <name>/<version|latest>, <name>@<alias>, <m-id>."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if "@" in reference:
        name, alias = reference.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    if "/" in reference:
        name, version = reference.split("/", 1)
        if version == "latest":
            found = client.search_model_versions(f"name = '{name}'")
            version = str(max(int(v.version) for v in found)) if found else "latest"
        return client.get_model_version(name, version).run_id
    return client.get_logged_model(reference).source_run_id
