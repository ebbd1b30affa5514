"""Fault tolerance: a training worker SIGKILLed mid-run is restarted from the last checkpoint
and the run finishes, having lost fewer iterations than one checkpoint interval."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, tiny_config
from tests.distributed.helpers import environment, write_params

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ITERATIONS = 60
CHECKPOINT_EVERY = 10
PROGRESS = re.compile(r"RayTrainWorker pid=(\d+)\).*\[train\] ([\d,]+)/[\d,]+ iterations")
RESUMED = re.compile(r"resuming from the checkpoint at iteration (\d+)")


def test_a_killed_worker_resumes_from_the_last_checkpoint(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data,
        tmp_path,
        iterations=ITERATIONS,
        checkpoint_every=CHECKPOINT_EVERY,
        eval_every=ITERATIONS,
        num_workers=2,
        cpus_per_worker=1.0,
        max_failures=1,
    )
    params = write_params(config, tmp_path / "params.yaml")
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.cli", "train", "--params", str(params)],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, killed_at, killed_pid = [], None, None
    deadline = time.monotonic() + 600
    for line in process.stdout:
        lines.append(line)
        match = PROGRESS.search(line)
        done = int(match.group(2).replace(",", "")) if match else 0
        if match and killed_at is None and done > CHECKPOINT_EVERY + 2:
            killed_pid, killed_at = int(match.group(1)), done
            os.kill(killed_pid, signal.SIGKILL)  # rank 0's worker process
        if time.monotonic() > deadline:
            process.kill()
            break
    process.wait(timeout=60)
    log = "".join(lines)
    assert process.returncode == 0, log[-4000:]
    assert killed_at is not None, log[-4000:]

    resumed = [int(m) for m in RESUMED.findall(log)]
    assert len(resumed) == 1, log[-4000:]
    lost = killed_at - resumed[0]
    print(
        f"killed rank 0 (pid {killed_pid}) after iteration {killed_at}; resumed at "
        f"{resumed[0]}: {lost} iterations lost (checkpoint interval {CHECKPOINT_EVERY})"
    )
    assert 0 <= lost <= CHECKPOINT_EVERY
    final = json.loads((tmp_path / "models" / "train_metrics.json").read_text())
    assert final["step"] == ITERATIONS
