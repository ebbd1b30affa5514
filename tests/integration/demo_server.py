"""Helpers of the demo tests: a tiny trained model, the settings to serve it on loopback, and the
server itself in a child process.

`server_process` runs `python -m tests.integration.demo_server '<ServeConfig JSON>' [URI]`: the
same `serve()` that `snmn serve` calls, in its own process on a free port, until the test ends.
benchmarks/demo_load.py starts its server the same way.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import ServeConfig, from_dict
from pipeline.demo.app import serve
from pipeline.distributed import free_port
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


def train_tiny_model(tiny_data: Path, work: Path, task: str = "vqa") -> Path:
    """model.pt of 40 iterations on the tiny set (seconds): enough, with a short EMA, for the
    controller to follow the expert layouts ("more cubes than spheres": Find, Find,
    DescribeTwo, then NoOp), so that NoOp steps get folded."""
    config = tiny_config(
        tiny_data,
        work,
        model={"task": task},
        iterations=40,
        learning_rate=3e-3,
        ema_decay=0.5,
        log_every=40,
        eval_every=40,
        checkpoint_every=40,
    )
    train_loop(config, WorkerContext(), LocalReporter(work / "checkpoints"), {})
    return work / "models" / "model.pt"


def demo_settings(tiny_data: Path, model: Path | str, split: str = "val", **changes: Any):
    """ServeConfig over the tiny set, one torch thread."""
    settings = ServeConfig(
        model=str(model),
        features_dir=str(tiny_data / "features"),
        images_dir=str(tiny_data / "mini-clevr" / "images"),
        tokens_dir=str(tiny_data / "tokens"),
        split=split,
        port=free_port(),
        torch_threads=1,
    )
    return dataclasses.replace(settings, **changes)


@contextmanager
def server_process(
    settings: ServeConfig, log_path: Path, tracking_uri: str = "", timeout_s: float = 180.0
) -> Iterator[str]:
    """The demo in a child process: yields its URL once /api/info answers, stops it afterwards."""
    url = f"http://{settings.host}:{settings.port}"
    settings_json = json.dumps(dataclasses.asdict(settings))
    command = [sys.executable, "-m", "tests.integration.demo_server", settings_json, tracking_uri]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(f"{url}/api/info"):
            if process.poll() is not None:
                problem = f"exited with code {process.returncode}"
            elif time.monotonic() > deadline:
                problem = f"did not answer in {timeout_s:.0f} s"
            else:
                time.sleep(0.5)
                continue
            raise RuntimeError(f"the demo server {problem}; its log:\n{log_path.read_text()}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":  # the child of server_process
    serve(from_dict(ServeConfig, json.loads(sys.argv[1]), where="argv"), *sys.argv[2:3])
