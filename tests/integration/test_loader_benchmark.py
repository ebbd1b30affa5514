"""benchmarks/loader_speed.py runs at tiny sizes and prints every path and the workers' memory."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
PATHS = [
    "page_cache",
    "page_cache cold (from disk)",
    "page_cache, 4 read threads",
    "page_cache, 4 read threads, cold",
    "device (CPU RAM)",
    "page_cache via 1 loader process",
    "before: h5py per image, float32",
    "before: h5py per image, float32, cold",
    "before: numpy in RAM, float32",
]


def test_the_loader_benchmark_prints_every_path_and_each_workers_memory(tmp_path):
    command = [sys.executable, "benchmarks/loader_speed.py", "--images", "30"]
    command += ["--feature-shape", "4", "4", "16", "--batch-size", "8", "--batches", "3"]
    command += ["--steps", "1", "--params", "params.yaml", "--ray-workers", "1"]
    command += ["--work-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "store: 30 images of (4, 4, 16) float16" in out
    assert re.search(r"training step \(params model sizes\): [\d,]+ questions/s", out)
    for path in PATHS:
        assert re.search(rf"  {re.escape(path)} +[\d,]+ questions/s +[\d.]+ GB/s", out), path
    memory = re.search(r"1 Ray Train worker\(s\), rank 0: before RSS ([\d,]+) MB", out)
    assert memory and int(memory.group(1).replace(",", "")) > 0
    assert "1 worker(s), device: PSS of all workers" in out
    assert not list(tmp_path.iterdir())  # the store went with its temporary folder
