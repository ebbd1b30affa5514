"""The MLflow seam: one run per training, logged by rank 0 only, browsable with `mlflow ui`.

When SNMN trains on "Are there more cubes than spheres?" and 700k other questions, the driver opens
one MLflow run (params flattened from params.yaml, tags with the git commit and the params
fingerprint) and hands its run id to the workers; rank 0 logs metrics, artifacts and the final
model into it; other ranks get a NullTracker. mlflow is imported only inside this file's functions,
so `import pipeline` and the unit tests never need it.

The run is made to read well in `mlflow ui` (MLflow 3): the experiment is marked as model training
(tag mlflow.experimentKind), so the UI opens on the runs table rather than on the GenAI overview of
traces; the run carries MLflow's source tags (mlflow.source.name "snmn train", the git commit) and
its data as dataset inputs ("mini-CLEVR train" with a digest of its tokens and feature manifest,
context "training"; "mini-CLEVR val", context "validation"), which the runs table shows in its
Source and Dataset columns. Tag names: the "System Tags" of MLflow's tracking documentation
(mlflow/utils/mlflow_tags.py); dataset inputs: https://mlflow.org/docs/latest/ml/dataset.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# The experiment tag MLflow 3's UI reads to choose its layout: "custom_model_development" opens an
# experiment on its runs table, "genai_development" on traces (MLflow's ExperimentKind values).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


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


@dataclass(frozen=True)
class DatasetRecord:
    """One split a training reads, as MLflow's dataset input of the run.

    CLEVR's train split: name "CLEVR train", digest of its vocabularies, tokens and feature
    manifest, context "training", source the tokens folder, profile {"questions": 699989, ...}.
    """

    name: str
    digest: str
    context: str  # "training" | "validation" (MLflow's mlflow.data.context input tag)
    source: str  # the folder the data was read from
    profile: dict[str, Any] = field(default_factory=dict)


def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    datasets: Sequence[DatasetRecord] = (),
) -> str:
    """Create the run on the driver, in an experiment marked as model training, with its
    dataset inputs; returns its id for the workers."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(
            experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
    else:
        experiment_id = found.experiment_id
        if EXPERIMENT_KIND_TAG not in found.tags:  # made before this tag; a user's choice stays
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [(key, str(value)[:6000]) for key, value in sorted(params.items())]
    for start in range(0, len(items), 100):
        chunk = [Param(key, value) for key, value in items[start : start + 100]]
        client.log_batch(run.info.run_id, params=chunk)
    if datasets:
        client.log_inputs(run.info.run_id, datasets=[_dataset_input(d) for d in datasets])
    return run.info.run_id


def _dataset_input(record: DatasetRecord):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=record.name,
        digest=record.digest,
        source_type="local",
        source=json.dumps({"uri": record.source}),
        profile=json.dumps(record.profile),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", record.context)])


def runs_page(tracking_uri: str, run_id: str) -> str:
    """The address of the run's experiment on the runs table of `mlflow ui` (the server's own UI
    for an http:// tracking URI, else `mlflow ui`'s default 127.0.0.1:5000). MLflow 3.17's UI
    opens every experiment on its GenAI overview unless the address asks for
    workflowType=machine_learning or the browser was switched to "Model training" once."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    served = tracking_uri.startswith(("http://", "https://"))
    base = tracking_uri.rstrip("/") if served else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def source_tags(project_dir: str | Path, command: str) -> dict[str, str]:
    """MLflow's own tags for where a run comes from, which the UI shows (Source, User columns):
    the command ("snmn train"), run locally, by this user, at this git commit."""
    tags = {"mlflow.source.name": command, "mlflow.source.type": "LOCAL"}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # a container user with no name
        pass
    commit = _git(project_dir, "rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
    branch = _git(project_dir, "rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":  # not a detached checkout
        tags["mlflow.source.git.branch"] = branch
    return tags


def git_commit(project_dir: str | Path) -> str:
    """The checked-out commit (with '-dirty' when the tree has changes), or 'unknown'."""
    commit = _git(project_dir, "rev-parse", "HEAD")
    dirty = _git(project_dir, "status", "--porcelain", "--untracked-files=no")
    if commit is None or dirty is None:
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _git(project_dir: str | Path, *arguments: str) -> str | None:
    """What `git <arguments>` prints in `project_dir`, stripped; None outside a git checkout."""
    try:
        return subprocess.run(
            ["git", *arguments], cwd=project_dir, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


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
