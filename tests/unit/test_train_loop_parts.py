"""The parts of the training loop: when it logs, validates and checkpoints; build or resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.config import Config, TrainConfig
from pipeline.errors import ConfigError
from pipeline.tracking import NullTracker
from pipeline.training import checkpoint as ckpt
from pipeline.training.loop import (
    TrainingLog,
    WorkerContext,
    build_or_resume,
    checkpoint_state,
    checkpoints_at,
    logs_at,
    validates_at,
)
from snmn.config import ModelConfig
from tests.conftest import TINY_MODEL

MODEL = ModelConfig(**{**TINY_MODEL, "vocab_size": 12, "num_answers": 5})
CONFIG = Config(model=MODEL, train=TrainConfig(learning_rate=1e-2))


def steps_where(due, train: TrainConfig) -> list[int]:
    return [done for done in range(1, train.iterations + 1) if due(train, done)]


def test_log_validate_and_checkpoint_steps():
    train = TrainConfig(iterations=12, log_every=3, eval_every=6, checkpoint_every=5)
    assert steps_where(logs_at, train) == [3, 6, 9, 12]
    assert steps_where(validates_at, train) == [6, 12]
    assert steps_where(checkpoints_at, train) == [5, 10, 12]  # and always after the last


def test_validation_waits_for_a_log_line():
    """eval_every 5 with log_every 3: 5 and 10 have no log line, so only the last validates."""
    train = TrainConfig(iterations=12, log_every=3, eval_every=5, checkpoint_every=12)
    assert steps_where(validates_at, train) == [12]


def one_update(run) -> None:
    """An Adam step and an EMA step on a random batch, so that every state has moved."""
    tokens = torch.randint(1, MODEL.vocab_size, (3, 4))
    features = torch.randn(3, MODEL.feature_height, MODEL.feature_width, MODEL.feature_dim)
    output = run.model(tokens, torch.tensor([4, 3, 2]), features)
    run.optimizer.zero_grad()
    output.answer_logits.logsumexp(dim=1).sum().backward()
    run.optimizer.step()
    run.ema.update(run.model)


def assert_same_tensors(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        if isinstance(first[key], dict):
            assert_same_tensors(first[key], second[key])
        elif isinstance(first[key], torch.Tensor):
            assert torch.equal(first[key], second[key]), key
        else:
            assert first[key] == second[key], key


def test_a_fresh_run_starts_from_the_seeded_weights_and_reseeds_per_rank():
    runs = []
    for rank in (0, 1):
        runs.append(build_or_resume(MODEL, CONFIG.train, WorkerContext(rank=rank), None, "f"))
        after_build = torch.rand(4)  # dropout's draws on this rank
        torch.manual_seed(CONFIG.train.seed + 1 + rank)
        assert torch.equal(after_build, torch.rand(4))
    assert (runs[0].start, runs[0].history) == (0, [])
    assert_same_tensors(runs[0].model.state_dict(), runs[1].model.state_dict())
    assert_same_tensors(runs[0].model.state_dict(), runs[0].ema.average.state_dict())


def test_a_resumed_run_continues_from_its_checkpoint(tmp_path):
    run = build_or_resume(MODEL, CONFIG.train, WorkerContext(), None, CONFIG.fingerprint())
    for _ in range(2):
        one_update(run)
    run.history.append({"step": 2, "vqa_loss_total": 1.5})
    state = checkpoint_state(run, 2, CONFIG, WorkerContext())
    saved = ckpt.load(ckpt.save(state, tmp_path / "step_2"))

    resumed = build_or_resume(MODEL, CONFIG.train, WorkerContext(), saved, CONFIG.fingerprint())
    assert resumed.start == 2
    assert resumed.history == run.history and resumed.history is not saved.history
    assert_same_tensors(resumed.model.state_dict(), run.model.state_dict())
    assert_same_tensors(resumed.ema.state_dict(), run.ema.state_dict())
    assert_same_tensors(resumed.optimizer.state_dict(), run.optimizer.state_dict())
    fresh = build_or_resume(MODEL, CONFIG.train, WorkerContext(), None, CONFIG.fingerprint())
    weight = "answer_head.output.weight"
    assert not torch.equal(fresh.model.state_dict()[weight], run.model.state_dict()[weight])


def test_other_ranks_send_no_checkpoint():
    run = build_or_resume(MODEL, CONFIG.train, WorkerContext(), None, CONFIG.fingerprint())
    assert checkpoint_state(run, 1, CONFIG, WorkerContext()) is not None
    # world_size 1 keeps the gather local; rank 1 must still hand nothing to its reporter
    assert checkpoint_state(run, 1, CONFIG, WorkerContext(rank=1)) is None


def test_a_checkpoint_of_other_params_is_refused():
    run = build_or_resume(MODEL, CONFIG.train, WorkerContext(), None, CONFIG.fingerprint())
    saved = checkpoint_state(run, 3, CONFIG, WorkerContext())
    other = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, batch_size=32))
    with pytest.raises(ConfigError, match="other params .* train.runs_dir"):
        build_or_resume(MODEL, other.train, WorkerContext(), saved, other.fingerprint())


def test_the_log_line_records_the_metrics_and_estimates_the_time_left(capsys):
    run = build_or_resume(MODEL, CONFIG.train, WorkerContext(), None, CONFIG.fingerprint())
    train = dataclasses.replace(CONFIG.train, iterations=100, batch_size=64)
    log = TrainingLog(train, 1, WorkerContext(), NullTracker(), run)
    metrics = {"vqa_loss_total": 1.25, "vqa_train_accuracy": 0.5, "questions_per_s": 100.0}
    log.write(50, metrics)
    # 100 questions/s of batches of 64: 1.5625 iterations/s, 50 to go → 32 s
    line = (
        "[train] 50/100 iterations | 1.6 iterations/s | ETA 0:00:32 | vqa loss 1.250 | acc 0.500"
        " | 100 q/s"
    )
    assert capsys.readouterr().err.splitlines() == [line]
    assert run.history == [{"step": 50, **metrics}]
    TrainingLog(train, 1, WorkerContext(rank=1), NullTracker(), run).write(60, metrics)
    assert capsys.readouterr().err == "" and len(run.history) == 1  # only rank 0 records
