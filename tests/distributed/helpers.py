"""Real services for the distributed tests: a two-node Ray cluster and an MLflow server.

Each runs in its own process session so that a test stops exactly what it started (never
`ray stop`, which would end every Ray process on the machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from pipeline.config import Config, to_dict

VENV_BIN = Path(sys.executable).parent
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict[str, str]:
    return {**os.environ, **QUIET, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(),
            start_new_session=True,
        )


def stop_session(process: subprocess.Popen) -> None:
    """SIGKILL the whole process group (daemons Ray started inherit it)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_for_http(url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s; log:\n{log.read_text()[-3000:]}")


def write_params(config: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path
