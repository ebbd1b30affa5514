"""The Ray seam: training runs as a Ray Train TorchTrainer, on one machine or a Ray cluster.

Whether SNMN learns "Is the cube left of the sphere?" on one laptop core or on eight GPU nodes,
the same `pipeline.training.train_loop` runs on every worker; this file is the only place that
knows about Ray. It starts (or joins) Ray quietly, builds the ScalingConfig / RunConfig /
FailureConfig from params, hands every worker a plain dict (the Config, the MLflow run id and an
absolute tracking URI: workers change their working directory), and adapts Ray Train's
checkpoint API to the loop's small Reporter interface. Ray is imported inside functions only.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.checkpoint import TrainingState
from pipeline.checkpoint import load as load_checkpoint
from pipeline.checkpoint import save as save_checkpoint
from pipeline.config import Config, TrainConfig, from_dict, to_dict

# Quiet, offline-friendly Ray defaults (platform-notes.md); a user's own values win.
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",
    "RAY_DEDUP_LOGS": "0",
    # Busy-waiting OpenMP threads slow torch several times over on a shared CPU.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def quiet_ray_environment() -> None:
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def start_ray(train: TrainConfig) -> bool:
    """Join `train.ray_address`, or start a local Ray for the workers; True if started here."""
    import ray

    quiet_ray_environment()
    if ray.is_initialized():
        return False
    address = train.ray_address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        return True
    cpus = max(os.cpu_count() or 1, int(train.num_workers * train.cpus_per_worker + 0.999))
    # The dashboard also serves the state API that Ray Train's placement-group cleaner polls.
    ray.init(num_cpus=cpus, include_dashboard=True, logging_level="WARNING")
    return True


def fit(
    config: Config,
    run_name: str,
    tracking: dict[str, str],
) -> dict[str, Any]:
    """Run `train_loop` on `train.num_workers` Ray Train workers; returns the last metrics.

    Re-running with the same `run_name` resumes from that run's latest checkpoint.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    train = config.train
    started = start_ray(train)
    try:
        trainer = TorchTrainer(
            ray_worker_entry,
            train_loop_config={
                "config": to_dict(config),
                "tracking": tracking,
                "run_name": run_name,
            },
            scaling_config=ScalingConfig(
                num_workers=train.num_workers,
                use_gpu=train.use_gpu,
                resources_per_worker={"CPU": train.cpus_per_worker},
                placement_strategy=train.placement_strategy,
            ),
            run_config=RunConfig(
                name=run_name,
                storage_path=str(Path(train.runs_dir).resolve()),
                failure_config=FailureConfig(max_failures=train.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints),
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        result = trainer.fit()
        return dict(result.metrics or {})
    finally:
        if started:
            ray.shutdown()


def ray_worker_entry(loop_config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: rebuild the Config, then the plain training loop."""
    import ray
    import ray.train
    import ray.train.torch

    from pipeline.training import WorkerContext, train_loop

    _quiet_worker_logs()
    context = ray.train.get_context()
    config = from_dict(Config, loop_config["config"], where="ray train_loop_config")
    worker = WorkerContext(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=str(ray.train.torch.get_device()),
        node=ray.get_runtime_context().get_node_id(),
    )
    run_folder = Path(config.train.runs_dir).resolve() / loop_config["run_name"]
    train_loop(config, worker, RayReporter(run_folder), loop_config["tracking"])


def _quiet_worker_logs() -> None:
    """Ray Train logs every report at INFO under a logger named by its file path; mute it."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing to mute
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


class RayReporter:
    """The loop's Reporter on Ray Train: checkpoints go through ray.train.report/get_checkpoint.

    Ray Train registers a reported checkpoint when its controller next polls (every ~2 s); a
    worker killed in between leaves a complete checkpoint on storage that Ray does not offer
    back. `load_latest` therefore reads the newest complete checkpoint in the run's folder
    (names are timestamps) and asks Ray only when the folder holds none (remote storage).
    """

    def __init__(self, run_folder: Path) -> None:
        self.run_folder = run_folder

    def load_latest(self) -> TrainingState | None:
        import ray.train

        for directory in sorted(self.run_folder.glob("checkpoint_*"), reverse=True):
            try:
                return load_checkpoint(directory)
            except (OSError, RuntimeError, EOFError, KeyError):  # absent or half-copied
                continue
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory)

    def report(self, metrics: dict[str, float], state: TrainingState | None) -> None:
        """Every rank calls this at the same steps (a barrier); rank 0 passes the state."""
        import ray.train

        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="snmn-checkpoint-") as directory:
            save_checkpoint(state, directory)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


# Files and folders that stay behind when the project is shipped to a cluster as working_dir.
JOB_EXCLUDES = [
    ".venv",
    ".git",
    ".dvc/cache",
    "data",
    "runs",
    "models",
    "mlflow.db",
    "mlartifacts",
    "mlruns",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
]


AGENT_WAIT_S = 180  # how long `submit_job` waits for a head node's job agent


def submit_job(
    address: str, params_path: str, project_dir: str | Path, wait: bool, timeout_s: float = 3600
) -> tuple[str, str]:
    """Submit `snmn train` as a Ray job with the project as working dir; (job id, status).

    The cluster's nodes need the project's packages (docker/ images) and every path in params
    reachable from every node (shared storage); MLflow should be an http:// tracking server.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    quiet_ray_environment()
    client = JobSubmissionClient(address)
    job = dict(
        entrypoint=f"python -m stages.cli train --params {params_path}",
        runtime_env={
            "working_dir": str(Path(project_dir).resolve()),
            "excludes": JOB_EXCLUDES,
            "env_vars": {key: os.environ.get(key, value) for key, value in RAY_ENVIRONMENT.items()},
        },
    )
    # A head node that has just started (or a busy one) answers "No available agent to submit
    # job, please try again later" until its job agent is up: try again for up to 3 minutes.
    agent_deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            job_id = client.submit_job(**job)
            break
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > agent_deadline:
                raise
            time.sleep(2)
    if not wait:
        return job_id, str(client.get_job_status(job_id))
    deadline = time.monotonic() + timeout_s
    done = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = client.get_job_status(job_id)
    while status not in done and time.monotonic() < deadline:
        time.sleep(2)
        status = client.get_job_status(job_id)
    return job_id, str(status.value if hasattr(status, "value") else status)


def job_logs(address: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).get_job_logs(job_id)
