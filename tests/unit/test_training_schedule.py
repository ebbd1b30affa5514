"""What a training sees when: Adam's rate per iteration, and the curriculum's batches."""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.config import TrainConfig
from pipeline.data.datasets import CurriculumBatchSampler, EpochBatchSampler
from pipeline.errors import ConfigError
from pipeline.training.loop import WorkerContext, batch_sampler, learning_rate


def test_official_default_is_constant():
    train = TrainConfig()
    assert [learning_rate(train, step) for step in (0, 1, 100_000, 199_999)] == [1e-4] * 4


def test_warm_up_then_cosine_to_zero():
    train = dataclasses.replace(
        TrainConfig(),
        learning_rate=2e-3,
        warmup_iterations=10,
        lr_schedule="cosine",
        iterations=110,
    )
    assert learning_rate(train, 0) == pytest.approx(2e-4)  # the first update uses 1/10
    assert learning_rate(train, 9) == pytest.approx(2e-3)
    assert learning_rate(train, 10) == pytest.approx(2e-3)  # decay starts at the peak
    assert learning_rate(train, 60) == pytest.approx(1e-3)  # half way down
    assert learning_rate(train, 109) == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    rates = [learning_rate(train, step) for step in range(10, 110)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        TrainConfig(lr_schedule="step")


def task_data(layouts: list[list[int]]):
    """A stand-in TaskData: the sampler reads only the layouts, the number of questions and
    the rows whose image has features (all of them here)."""
    questions = SimpleNamespace(layouts=np.array(layouts), split="train")
    return SimpleNamespace(task="vqa", train=_Sized(questions))


class _Sized:
    def __init__(self, questions) -> None:
        self.questions = questions
        self.rows_with_features = np.arange(len(questions.layouts))

    def __len__(self) -> int:
        return len(self.questions.layouts)


LAYOUTS = [[1, 7, 0, 0]] * 6 + [[1, 2, 3, 7]] * 10 + [[-1, -1, -1, -1]] * 4  # 6 short


def test_curriculum_batches_hold_only_short_questions_until_the_switch():
    train = dataclasses.replace(
        TrainConfig(), batch_size=4, curriculum_iterations=[3], curriculum_max_modules=[2]
    )
    sampler = batch_sampler(task_data(LAYOUTS), train, 4, WorkerContext(), 0, start=0)
    assert isinstance(sampler, CurriculumBatchSampler)
    batches = iter(sampler)
    assert all(max(next(batches)) < 6 for _ in range(3))  # rows 0-5 are the short ones
    assert max(max(next(batches)) for _ in range(20)) >= 6


def test_no_curriculum_is_the_plain_shuffled_sampler():
    sampler = batch_sampler(task_data(LAYOUTS), TrainConfig(batch_size=4), 4, WorkerContext(), 0, 0)
    assert isinstance(sampler, EpochBatchSampler)


def test_too_few_short_questions_for_a_batch_is_a_clear_error():
    train = dataclasses.replace(
        TrainConfig(), batch_size=8, curriculum_iterations=[3], curriculum_max_modules=[2]
    )
    with pytest.raises(ConfigError, match="only 6 questions .* at most 2 modules"):
        batch_sampler(task_data(LAYOUTS), train, 8, WorkerContext(), 0, start=0)


def test_curriculum_stages_must_pair_up():
    with pytest.raises(ConfigError, match="one value per stage"):
        TrainConfig(curriculum_iterations=[400, 400], curriculum_max_modules=[2])
    with pytest.raises(ConfigError, match="at least 1"):
        TrainConfig(curriculum_iterations=[0], curriculum_max_modules=[2])
