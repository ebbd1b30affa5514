"""The Ray seam: the only module that imports Ray, on one machine or a Ray cluster.

Whether SNMN learns "Is the cube left of the sphere?" on one laptop core or on eight GPU nodes,
the same training loop runs on every worker. `fit` runs it as a Ray Train TorchTrainer: it
starts (or joins) Ray quietly, builds the ScalingConfig / RunConfig / FailureConfig from params,
hands every worker a plain dict (the Config, the MLflow run id and an absolute tracking URI:
workers change their working directory) and Ray Train's checkpoints as directories
(RayCheckpoints), and calls the training's own worker function (pipeline/training/launch.py).
`run_on_actors` spreads other work (feature extraction) over a pool of Ray actors, and
`submit_job` sends a training to a cluster as a job. Ray is imported inside functions only.

A bad value or bad data found inside a worker (a ConfigError, a DataError: the same on every
retry) is not retried: the run stops at the first failure and `fit` raises that error itself, so
`snmn train` ends with its one line instead of Ray Train's WorkerGroupError. A local Ray started
here tells its processes where its own dashboard is (RAY_API_SERVER_ADDRESS): Ray Train's
placement-group cleaner asks the state API whether the controller is alive, and without an
address that lookup fails with "Found multiple active Ray instances" whenever another local Ray
(another user's, or a test's) is running on the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.config import Config, TrainConfig, to_dict
from pipeline.errors import ConfigError, DataError

# Quiet, offline-friendly Ray defaults (no usage stats, no auth token); a user's own values win.
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
    # The dashboard also serves the state API that Ray Train's placement-group cleaner polls;
    # the cleaner finds it through RAY_API_SERVER_ADDRESS (module docstring).
    port = free_port()
    ray.init(
        num_cpus=cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
        logging_level="WARNING",
    )
    return True


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


WorkerMain = Callable[[dict[str, Any], dict[str, Any], "RayCheckpoints"], None]


def fit(
    config: Config,
    run_name: str,
    tracking: dict[str, str],
    worker_main: WorkerMain,
) -> dict[str, Any]:
    """Run `worker_main` on `train.num_workers` Ray Train workers; returns the last metrics.

    Each worker calls `worker_main(loop_config, worker, checkpoints)`: loop_config holds the
    Config as a plain dict, the tracking dict and the run name; worker its rank, world_size,
    device and node; checkpoints is Ray Train's checkpoint channel (RayCheckpoints). Re-running
    with the same `run_name` resumes from that run's latest checkpoint.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    train = config.train
    started = start_ray(train)
    try:
        trainer = TorchTrainer(
            _ray_worker_entry,
            train_loop_config={
                "config": to_dict(config),
                "tracking": tracking,
                "run_name": run_name,
                "worker_main": worker_main,
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
        with input_errors_not_retried():
            result = trainer.fit()
        return dict(result.metrics or {})
    except Exception as error:
        bad_input = input_error(error)
        if bad_input is None:
            raise
        raise bad_input from None  # the worker's one line, not Ray Train's wrapper
    finally:
        if started:
            ray.shutdown()


def input_error(error: BaseException) -> ConfigError | DataError | None:
    """The ConfigError / DataError a worker raised, from Ray Train's WorkerGroupError (which
    maps each failed rank to its original exception), or None."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        if isinstance(failures[rank], (ConfigError, DataError)):
            return failures[rank]
    return None


class StopOnInputErrors:
    """Ray Train failure policy: Ray's own decisions, except that a worker's ConfigError or
    DataError ends the run at once (a restart would read the same params and the same files)."""

    def __init__(self, default: Any) -> None:
        self.default = default

    def make_decision(self, training_failed_error: Exception) -> Any:
        from ray.train.v2._internal.execution.failure_handling import FailureDecision

        if input_error(training_failed_error) is not None:
            return FailureDecision.RAISE
        return self.default.make_decision(training_failed_error)


@contextlib.contextmanager
def input_errors_not_retried() -> Iterator[None]:
    """While a TorchTrainer.fit() starts, build its failure policy as StopOnInputErrors.

    Ray Train 2.x builds the policy from FailureConfig alone (no public hook), in the driver,
    and ships it to the controller actor; another Ray version without that seam keeps Ray's
    own policy (the error is then retried up to train.max_failures, and still reported as
    one line by `fit`).
    """
    try:
        from ray.train.v2.api import data_parallel_trainer as trainer_module
    except ImportError:
        yield
        return
    default_factory = getattr(trainer_module, "create_failure_policy", None)
    if default_factory is None:
        yield
        return
    trainer_module.create_failure_policy = lambda config: StopOnInputErrors(default_factory(config))
    try:
        yield
    finally:
        trainer_module.create_failure_policy = default_factory


def run_on_actors(
    actor_class: type,
    actor_args: tuple[Any, ...],
    tasks: list[tuple[Any, ...]],
    num_actors: int,
    address: str,
    want_gpu: bool,
    on_result: Callable[[int, Any], None],
) -> None:
    """`actor.run(*task)` for every task on `num_actors` Ray actors built as
    `actor_class(*actor_args)` (the arguments sent to the cluster once), each handed its next
    task as soon as it is done; `on_result(task index, result)` runs in the driver as results
    come back. A ConfigError / DataError in an actor is raised here as itself (one line)."""
    import ray

    quiet_ray_environment()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, include_dashboard=False, logging_level="WARNING")
    actors: list[Any] = []
    try:
        gpus = 1 if want_gpu and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote_class = ray.remote(num_cpus=1, num_gpus=gpus)(actor_class)
        shared = [ray.put(argument) for argument in actor_args]
        actors += [remote_class.remote(*shared) for _ in range(num_actors)]
        waiting = list(enumerate(tasks))
        running: dict[Any, tuple[Any, int]] = {}

        def hand_out(actor: Any) -> None:
            if waiting:
                index, task = waiting.pop(0)
                running[actor.run.remote(*task)] = (actor, index)

        for actor in actors:
            hand_out(actor)
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            actor, index = running.pop(done)
            try:
                on_result(index, ray.get(done))
            except ray.exceptions.RayTaskError as error:
                if isinstance(error.cause, (ConfigError, DataError)):
                    raise error.cause from None
                raise
            hand_out(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def _ray_worker_entry(loop_config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: who it is, then the training's own `worker_main`."""
    import ray
    import ray.train
    import ray.train.torch

    _quiet_worker_logs()
    context = ray.train.get_context()
    worker = {
        "rank": context.get_world_rank(),
        "world_size": context.get_world_size(),
        "device": str(ray.train.torch.get_device()),
        "node": ray.get_runtime_context().get_node_id(),
    }
    loop_config["worker_main"](loop_config, worker, RayCheckpoints())


def _quiet_worker_logs() -> None:
    """Ray Train logs every report at INFO under a logger named by its file path; mute it.

    It also logs the traceback of whatever the training function raised; for a ConfigError or
    DataError that is dropped here, since `fit` shows the error itself as one line.
    """
    try:
        from ray.train.v2._internal import util as train_util
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing to mute
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    traceback_logger = logging.getLogger(train_util.__name__)
    if not any(isinstance(f, _HideInputErrorTracebacks) for f in traceback_logger.filters):
        traceback_logger.addFilter(_HideInputErrorTracebacks())


class _HideInputErrorTracebacks(logging.Filter):
    """Drops a log record written while a ConfigError / DataError is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(sys.exc_info()[1], (ConfigError, DataError))


class RayCheckpoints:
    """Ray Train's checkpoints as directories: the latest one Ray offers back, and reporting
    metrics (every rank, at the same steps: a barrier) with a directory to keep or none."""

    @contextlib.contextmanager
    def latest(self) -> Iterator[str | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield directory

    def report(self, metrics: dict[str, float], directory: str | None = None) -> None:
        import ray.train

        if directory is None:
            ray.train.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


# Files and folders that stay behind when the project is shipped to a cluster as working_dir
# (gitignore patterns: "/data" is the project's data folder, not pipeline/data/).
JOB_EXCLUDES = [
    "/.venv",
    "/.git",
    "/.dvc/cache",
    "/data",
    "/runs",
    "/models",
    "/mlflow.db",
    "/mlartifacts",
    "/mlruns",
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
    from ray.job_submission import JobStatus

    quiet_ray_environment()
    client = job_client(address)
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
            if "No available agent" not in str(error):
                raise
            if time.monotonic() > agent_deadline:
                raise ConfigError(
                    f"--address {address}: the head node's job agent did not come up within "
                    f"{AGENT_WAIT_S} s ('No available agent'); check `ray status` on the head "
                    "node, then submit again"
                ) from None
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
    return job_client(address).get_job_logs(job_id)


def job_client(address: str) -> Any:
    """A JobSubmissionClient for `address`; ConfigError naming it when nothing answers there."""
    from ray.exceptions import RpcError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RpcError):
        raise ConfigError(
            f"--address {address}: no Ray job server answers there; check the host and port "
            "(the head node's dashboard, http://<head-node>:8265 by default), that the cluster is "
            "up (`ray status` on the head node) and that this machine can reach that port"
        ) from None
