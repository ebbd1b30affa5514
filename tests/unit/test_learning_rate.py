"""Adam's learning rate per iteration: linear warm-up, then constant (official) or cosine to 0."""

import dataclasses
import math

import pytest

from pipeline.config import ConfigError, TrainConfig
from pipeline.training import learning_rate


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
