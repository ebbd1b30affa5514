"""Load on the demo server: N questions, C at a time, over loopback; latency p50/p90/p99.

Each request asks a suggested question of the served split ("Are there more cubes than
spheres?"), about a random image, one in five with an unknown word added ("... zorblax"), the
way people use the page: POST /api/ask, keep-alive connections, one per client thread. Either
starts the server itself (server_process of tests/integration/demo_server.py, as the demo tests
do: the function `snmn serve` runs, in a child process on a free loopback port, with params.yaml's
serve section plus the options below) or targets a running one with --url (loopback addresses
only). Any non-200 answer is an error: the exit code is 1.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/demo_load.py --model models/model.pt

Figures: wall time, requests/s, client latency p50/p90/p99/max, and the server's own inference
time (the `seconds` field: features + model, under its lock) p50/p99. With --slow-clients N,
N more connections dribble a request's headers a byte every half second ("slowloris") for the
whole run: the figures then show whether normal requests still get through, and how many slow
connections the server dropped.

    python benchmarks/demo_load.py --model models/model.pt --slow-clients 150
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import ServeConfig, from_dict  # noqa: E402
from pipeline.distributed import free_port  # noqa: E402
from tests.integration.demo_server import server_process  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--url", default="", help="a running server (loopback only)")
    parser.add_argument("--params", default="params.yaml", help="its serve section, if any")
    parser.add_argument("--model", default="", help="model.pt or MLflow URI [serve.model]")
    parser.add_argument("--split", default="", help="[serve.split]")
    parser.add_argument("--threads", type=int, default=0, help="server torch threads [serve]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-clients", type=int, default=0, help="slowloris connections")
    return parser.parse_args()


def settings_from(args: argparse.Namespace) -> ServeConfig:
    path = Path(args.params)
    raw = (yaml.safe_load(path.read_text()) or {}).get("serve", {}) if path.is_file() else {}
    settings = from_dict(ServeConfig, raw, where=str(path))
    changes = {"model": args.model, "split": args.split, "torch_threads": args.threads}
    changes = {key: value for key, value in changes.items() if value}
    return dataclasses.replace(settings, host="127.0.0.1", port=free_port(), **changes)


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    loopback = host == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not loopback:
        sys.exit(f"error: --url {url}: only loopback servers are load-tested")


def workload(url: str, count: int, seed: int) -> list[dict[str, object]]:
    """`count` (image id, question) requests drawn from the split's suggested questions."""
    total = requests.get(f"{url}/api/info", timeout=30).json()["images"]["count"]
    images = requests.get(f"{url}/api/images", params={"limit": min(total, 100)}).json()
    asked = [(entry["id"], q) for entry in images["images"] for q in entry["questions"]]
    asked = asked or [(entry["id"], "What color is the cube?") for entry in images["images"]]
    generator = random.Random(seed)
    bodies = []
    for i in range(count):
        image_id, question = generator.choice(asked)
        if i % 5 == 0:
            question = question.rstrip("?") + " zorblax?"
        bodies.append({"image_id": image_id, "question": question})
    return bodies


def run(url: str, bodies: list[dict[str, object]], concurrency: int) -> dict[str, list[float]]:
    local = threading.local()

    def one(body: dict[str, object]) -> tuple[int, float, float]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        response = local.session.post(f"{url}/api/ask", json=body, timeout=60)
        latency = time.perf_counter() - started
        inference = response.json().get("seconds", 0.0) if response.status_code == 200 else 0.0
        return response.status_code, latency, inference

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, bodies))
    return {
        "errors": [status for status, _, _ in results if status != 200],
        "latency": sorted(latency for _, latency, _ in results),
        "inference": sorted(inference for _, _, inference in results),
    }


class SlowClients:
    """`count` connections that send a request's headers one byte every half second."""

    def __init__(self, url: str, count: int) -> None:
        address = urlparse(url)
        self.sockets = [
            socket.create_connection((address.hostname, address.port), timeout=5)
            for _ in range(count)
        ]
        self.dropped = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self) -> None:
        header = b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
        sent, alive = 0, list(self.sockets)
        while alive and not self.stop.wait(0.5):
            for connection in list(alive):
                try:
                    connection.sendall(header[sent : sent + 1])
                except OSError:  # the server closed it
                    alive.remove(connection)
                    self.dropped += 1
            sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.sockets:
            connection.close()


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, round(share * (len(values) - 1)))]


def report(url: str, bodies: list, concurrency: int, slow_clients: int = 0) -> int:
    run(url, bodies[: min(10, len(bodies))], 1)  # warm-up: first-call allocations, caches
    slow = SlowClients(url, slow_clients) if slow_clients else None
    started = time.perf_counter()
    try:
        figures = run(url, bodies, concurrency)
    finally:
        wall = time.perf_counter() - started
        if slow is not None:
            slow.close()
    latency, inference = figures["latency"], figures["inference"]
    ms = {
        name: 1000 * percentile(latency, share)
        for name, share in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    }
    print(f"demo load: {len(bodies)} requests, {concurrency} concurrent, {url}")
    print(f"  errors: {len(figures['errors'])} {sorted(set(figures['errors']))}")
    if slow is not None:
        print(f"  slow clients: {slow_clients} connected, {slow.dropped} dropped by the server")
    print(f"  wall {wall:.2f} s, {len(bodies) / wall:.1f} requests/s")
    print("  latency ms: " + ", ".join(f"{name} {value:.0f}" for name, value in ms.items()))
    print(
        f"  server inference ms: p50 {1000 * percentile(inference, 0.5):.1f}, "
        f"p99 {1000 * percentile(inference, 0.99):.1f}, "
        f"mean {1000 * statistics.fmean(inference):.1f}"
    )
    return 1 if figures["errors"] else 0


def main() -> None:
    args = parse_args()
    if args.url:
        check_loopback(args.url)
        url = args.url.rstrip("/")
        sys.exit(
            report(
                url, workload(url, args.requests, args.seed), args.concurrency, args.slow_clients
            )
        )
    settings = settings_from(args)
    print(
        f"starting the server: model {settings.model}, split {settings.split}, "
        f"{settings.torch_threads} torch thread(s)"
    )
    with tempfile.TemporaryDirectory() as folder:
        with server_process(settings, Path(folder) / "server.log") as url:
            code = report(
                url, workload(url, args.requests, args.seed), args.concurrency, args.slow_clients
            )
    sys.exit(code)


if __name__ == "__main__":
    main()
