"""`snmn train` checks its inputs before Ray starts, and a worker's bad-input error is final.

Before, a missing train.tokens_dir or model.feature_dim 1024 against 256-channel features were
found by every Ray worker after one to two minutes, retried once, and shown inside a 100-line
WorkerGroupError traceback. None of these tests starts Ray except the last (marked `ray`).
"""

import json
import time
from pathlib import Path

import pytest
import yaml

from pipeline import distributed
from pipeline.config import Config, from_dict
from pipeline.errors import ConfigError, DataError
from pipeline.training import launch
from tests.conftest import error_line, run_snmn

GRID = [4, 4, 256]  # what tiny features hold: height, width, channels


def fake_inputs(root: Path, splits=("train", "val"), feature_shape=GRID) -> dict:
    """Token files and complete feature manifests as the tokenize/extract stages leave them
    (the driver checks reads only their names and the manifests' fields)."""
    tokens, features = root / "tokens", root / "features"
    tokens.mkdir(parents=True)
    for name in ["vocab_question.json", "vocab_answer.json"]:
        (tokens / name).write_text("{}")
    for split in splits:
        (tokens / f"{split}.parquet").write_bytes(b"PAR1")
        (features / split).mkdir(parents=True)
        manifest = {"complete": True, "feature_shape": list(feature_shape), "shards": []}
        (features / split / "manifest.json").write_text(json.dumps(manifest))
    return {"tokens_dir": str(tokens), "features_dir": str(features)}


def config_for(train: dict, **model) -> Config:
    model = {"feature_height": 4, "feature_width": 4, "feature_dim": 256, **model}
    return from_dict(Config, {"model": model, "train": train})


def test_inputs_that_agree_pass(tmp_path):
    launch.check_inputs(config_for(fake_inputs(tmp_path)))


def test_a_missing_tokens_folder_names_it_and_the_key(tmp_path):
    train = fake_inputs(tmp_path) | {"tokens_dir": str(tmp_path / "nope")}
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=rf"^{missing}: no such folder \(train.tokens_dir"):
        launch.check_inputs(config_for(train))


def test_a_missing_token_file_is_named(tmp_path):
    train = fake_inputs(tmp_path)
    (tmp_path / "tokens" / "val.parquet").unlink()
    with pytest.raises(DataError, match=rf"^{tmp_path / 'tokens' / 'val.parquet'}: not found"):
        launch.check_inputs(config_for(train))


def test_missing_or_incomplete_features_are_named(tmp_path):
    train = fake_inputs(tmp_path)
    manifest = tmp_path / "features" / "val" / "manifest.json"
    manifest.write_text(json.dumps({"complete": False, "feature_shape": GRID}))
    with pytest.raises(DataError, match=rf"^{manifest}: features incomplete"):
        launch.check_inputs(config_for(train))
    manifest.unlink()
    with pytest.raises(DataError, match=r"split 'val' \(train.vqa_val_split\) not found"):
        launch.check_inputs(config_for(train))


def test_the_ref_task_needs_the_ref_splits(tmp_path):
    train = fake_inputs(tmp_path)
    with pytest.raises(DataError, match=r"loc_train.parquet: not found"):
        launch.check_inputs(config_for(train, task="ref"))
    with pytest.raises(ConfigError, match=r"train.ref_train_split: empty, but model.task ref"):
        launch.check_inputs(config_for(train | {"ref_train_split": ""}, task="ref"))


def test_feature_dim_against_the_manifests_channels(tmp_path):
    train = fake_inputs(tmp_path)
    mismatch = r"are \[4, 4, 1024\] but the features in .* are \[4, 4, 256\]"
    with pytest.raises(ConfigError, match=mismatch):
        launch.check_inputs(config_for(train, feature_dim=1024))


def test_snmn_train_stops_before_ray_with_one_line(tmp_path):
    train = fake_inputs(tmp_path) | {
        "runs_dir": str(tmp_path / "runs"),
        "output_dir": str(tmp_path / "models"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    params = tmp_path / "params.yaml"
    model = {"feature_height": 4, "feature_width": 4, "feature_dim": 1024}
    params.write_text(yaml.safe_dump({"model": model, "train": train}))
    start = time.monotonic()
    line = error_line(run_snmn("train", "--params", str(params)))
    assert line.startswith("error: model.feature_height/"), line
    assert "[4, 4, 1024]" in line and "manifest.json" in line
    assert time.monotonic() - start < 90  # torch loads; Ray and MLflow never start
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------------------------------------
# A worker's ConfigError / DataError: not retried, and shown as itself
# ---------------------------------------------------------------------------------------------


def worker_group_error(error: Exception) -> Exception:
    from ray.train.v2.api.exceptions import WorkerGroupError

    return WorkerGroupError(f"[Rank 0 Error Snippet]:\n{error}", {0: error, 1: error})


def test_input_errors_are_raised_at_once_and_others_follow_rays_policy():
    from ray.train import FailureConfig
    from ray.train.v2._internal.execution.failure_handling import (
        FailureDecision,
        create_failure_policy,
    )

    policy = distributed.StopOnInputErrors(create_failure_policy(FailureConfig(max_failures=1)))
    bad_data = worker_group_error(DataError("tokens/train.parquet: not found"))
    assert policy.make_decision(bad_data) == FailureDecision.RAISE
    crash = worker_group_error(RuntimeError("CUDA error: an illegal memory access"))
    assert policy.make_decision(crash) == FailureDecision.RETRY  # a real crash: max_failures
    assert policy.make_decision(crash) == FailureDecision.RAISE


class FakeTrainer:
    """TorchTrainer whose workers all failed with `error` (WorkerGroupError, as Ray 2.x)."""

    error: Exception = ConfigError("model.vocab_size: 90 in params, but the tokeniser found 88")
    policies: list = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def fit(self):
        from ray.train import FailureConfig
        from ray.train.v2.api import data_parallel_trainer

        self.policies.append(data_parallel_trainer.create_failure_policy(FailureConfig()))
        raise worker_group_error(self.error)


def test_fit_raises_the_workers_error_itself_with_the_policy_in_place(monkeypatch, tmp_path):
    import ray.train.torch
    from ray.train.v2.api import data_parallel_trainer

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    monkeypatch.setattr(distributed, "start_ray", lambda train: False)
    default_factory = data_parallel_trainer.create_failure_policy
    config = from_dict(Config, {"train": {"runs_dir": str(tmp_path)}})
    with pytest.raises(ConfigError) as caught:
        distributed.fit(config, "snmn-vqa-0", {}, launch.ray_worker_main)
    assert caught.value is not None and str(caught.value) == str(FakeTrainer.error)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert isinstance(FakeTrainer.policies[-1], distributed.StopOnInputErrors)
    assert data_parallel_trainer.create_failure_policy is default_factory  # restored


def test_a_local_ray_tells_its_processes_where_its_state_api_is(monkeypatch):
    """Ray Train's placement-group cleaner finds the state API through RAY_API_SERVER_ADDRESS;
    without it, it guesses, and fails when another local Ray instance is running."""
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert distributed.start_ray(Config().train)
    (kwargs,) = calls
    url = kwargs["runtime_env"]["env_vars"]["RAY_API_SERVER_ADDRESS"]
    assert url == f"http://{kwargs['dashboard_host']}:{kwargs['dashboard_port']}"
    assert kwargs["include_dashboard"]


@pytest.mark.ray
@pytest.mark.slow
def test_a_data_error_in_a_worker_stops_the_run_without_a_retry(tmp_path, capfd):
    """Straight to the workers (no driver check): the first failure ends the run, and the
    worker's traceback is not streamed to the driver (the error is shown once, as itself)."""
    config = from_dict(
        Config,
        {
            "train": {
                "tokens_dir": str(tmp_path / "no-tokens"),
                "features_dir": str(tmp_path / "no-features"),
                "runs_dir": str(tmp_path / "runs"),
                "max_failures": 3,
                "torch_threads": 1,
            }
        },
    )
    start = time.monotonic()
    with pytest.raises(DataError, match="no-tokens") as caught:
        distributed.fit(config, "snmn-vqa-bad-input", {}, launch.ray_worker_main)
    assert "Traceback" not in str(caught.value) and "\n" not in str(caught.value)
    assert time.monotonic() - start < 300
    output = capfd.readouterr()
    assert output.err.count("[train] 1 worker(s)") + output.out.count("[train] 1 worker(s)") <= 1
    assert "Error in training function" not in output.err + output.out
