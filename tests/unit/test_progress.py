"""The one progress line of the long stages: done/total, rate, ETA, at most every few seconds."""

import math
from types import SimpleNamespace

import pytest

import pipeline.progress as progress_module
from pipeline.progress import Progress, format_duration


@pytest.fixture
def clock(monkeypatch):
    """A fake time.perf_counter for pipeline.progress: set `clock.now` to move time."""
    fake = SimpleNamespace(now=0.0)
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(perf_counter=lambda: fake.now))
    return fake


def lines(capsys):
    return capsys.readouterr().err.splitlines()


def test_format_duration_is_hours_minutes_seconds():
    assert format_duration(0) == "0:00:00"
    assert format_duration(9.7) == "0:00:09"
    assert format_duration(430.2) == "0:07:10"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(math.inf) == "?" and format_duration(math.nan) == "?"


def test_the_line_names_stage_count_rate_and_eta(clock, capsys):
    progress = Progress(1500, "images", "extract")
    clock.now = 40.0
    progress.advance(1200)
    assert lines(capsys) == ["[extract] 1,200/1,500 images | 30.0 images/s | ETA 0:00:10"]
    assert progress.line("val split").endswith("ETA 0:00:10 | val split")


def test_lines_come_at_most_every_every_s_and_once_at_the_end(clock, capsys):
    progress = Progress(10, "images", "generate", every_s=5.0)
    for second in range(1, 10):  # one image a second: a line at 5 s, the next one due at 10 s
        clock.now = float(second)
        progress.advance(1)
    assert lines(capsys) == ["[generate] 5/10 images | 1.0 images/s | ETA 0:00:05"]
    clock.now = 9.5
    progress.advance(1, "test split")  # the total: printed at once, and only once
    progress.advance(0)
    clock.now = 20.0
    progress.advance(0)
    assert lines(capsys) == ["[generate] 10/10 images | 1.1 images/s | ETA 0:00:00 | test split"]


def test_now_prints_at_once_and_a_resumed_run_rates_only_its_own_work(clock, capsys):
    progress = Progress(1500, "images", "pretrain", done=1000, every_s=math.inf)
    clock.now = 10.0
    progress.advance(100)
    assert lines(capsys) == []
    progress.advance(0, "epoch 2/3 loss 0.412", now=True)
    assert lines(capsys) == [
        "[pretrain] 1,100/1,500 images | 10.0 images/s | ETA 0:00:40 | epoch 2/3 loss 0.412"
    ]


def test_before_any_work_the_eta_is_unknown(clock):
    progress = Progress(5, "images", "extract")
    clock.now = 3.0
    assert progress.line() == "[extract] 0/5 images | 0.0 images/s | ETA ?"
