"""One progress line for every long stage: how far, how fast, how long still.

Extracting the features of 15,000 CLEVR val images takes minutes; rendering mini-CLEVR or
pretraining the backbone too. Each of these stages counts its work with a `Progress` and gets
the same stderr line, at most every `every_s` seconds and once more when the total is reached:

    [extract] 1,200/15,000 images | 32.1 images/s | ETA 0:07:10
    [pretrain] 4,096/12,288 images | 210.4 images/s | ETA 0:00:38 | epoch 1/3 loss 0.412
    [train] 300/1,500 iterations | 2.6 iterations/s | ETA 0:07:41 | vqa loss 1.234 | 166 q/s

API (stable; `pipeline/training/loop.py` uses it too):

- `Progress(total, unit, stage, *, done=0, every_s=EVERY_S, stream=None)`: `done` units
  finished by an earlier, interrupted run count toward the total but not toward the rate (a
  resumed run's images/s is its own); lines go to `stream`, stderr by default (`snmn generate`
  keeps all it says on stdout, so that its stderr is one `error: ...` line when it fails).
- `progress.advance(count=1, details="", *, now=False, rate=None)`: count `count` more units;
  print the line if `every_s` seconds passed since the last one or if this reached the total
  (after that line, the last, nothing more), or if `now` (a stage that reports on its own
  schedule, say every `log_every` steps with the loss). `details` is appended after the ETA;
  `rate` (units/s), when given, replaces the run's average in the line and its ETA (training
  knows its speed over the last log window, validation left out).
- `progress.line(details="", rate=None)`: that line as a string, without printing; `progress.done`,
  `progress.total`, `progress.elapsed()`, `progress.rate()`, `progress.eta()` the numbers.
- `format_duration(seconds)`: "0:07:10" (hours:minutes:seconds), "?" when unknown (no rate yet).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

EVERY_S = 10.0  # seconds between two progress lines of a stage


def format_duration(seconds: float) -> str:
    """Seconds as hours:minutes:seconds, e.g. 430.2 → "0:07:10"; "?" if not finite."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(max(seconds, 0.0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Counts `unit`s of a stage's work toward `total` and prints its progress line to stderr."""

    def __init__(
        self,
        total: int,
        unit: str,
        stage: str,
        *,
        done: int = 0,
        every_s: float = EVERY_S,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.unit, self.stage, self.every_s = total, unit, stage, every_s
        self.stream = stream
        self.done = self.done_before = done
        self.started = self.last_line = time.perf_counter()
        self.final_line_printed = False

    def elapsed(self) -> float:
        """Seconds since this Progress was created."""
        return time.perf_counter() - self.started

    def rate(self) -> float:
        """Units per second done by this run."""
        return (self.done - self.done_before) / max(self.elapsed(), 1e-9)

    def eta(self, rate: float | None = None) -> float:
        """Seconds still needed at `rate` (default: this run's), inf before anything was done."""
        rate = self.rate() if rate is None else rate
        return (self.total - self.done) / rate if rate > 0 else math.inf

    def line(self, details: str = "", rate: float | None = None) -> str:
        """`[stage] done/total unit | rate unit/s | ETA h:mm:ss[ | details]`."""
        rate = self.rate() if rate is None else rate
        parts = [
            f"[{self.stage}] {self.done:,}/{self.total:,} {self.unit}",
            f"{rate:.1f} {self.unit}/s",
            f"ETA {format_duration(self.eta(rate))}",
        ]
        return " | ".join(parts + ([details] if details else []))

    def advance(
        self, count: int = 1, details: str = "", *, now: bool = False, rate: float | None = None
    ) -> None:
        """Count `count` more units; print the line if it is due (see the module docstring)."""
        self.done += count
        current, finished = time.perf_counter(), self.done >= self.total
        due = not self.final_line_printed and (finished or current - self.last_line >= self.every_s)
        if now or due:
            self.last_line = current
            self.final_line_printed = self.final_line_printed or finished
            print(self.line(details, rate), file=self.stream or sys.stderr, flush=True)
