"""The demo server against slow and hostile clients, on loopback: 150 connections dribbling a
byte at a time do not lock others out and are dropped after a few seconds; a foreign Host (DNS
rebinding) is refused; text that is not Unicode is a 422; HEAD and 405 follow HTTP."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from pipeline.demo.app import BODY_GRACE_S, HEADER_TIMEOUT_S, RequestGuard
from pipeline.vision.images import image_name
from tests.integration.demo_server import demo_settings, server_process, train_tiny_model

SLOW_CLIENTS = 150  # more than serve.max_connections (64)
IMAGE = 3


@pytest.fixture(scope="module")
def server(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    model = train_tiny_model(tiny_data, tmp_path_factory.mktemp("demo_hardening"))
    settings = demo_settings(tiny_data, model)
    assert settings.max_connections < SLOW_CLIENTS
    with server_process(settings, model.parent / "server.log") as url:
        yield url


class SlowClients:
    """`count` connections that send `start`, then one byte each every `every` seconds, and
    note when the server closes each of them and what it said first."""

    def __init__(self, url: str, count: int, start: bytes, every: float = 0.5) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sockets = [
            socket.create_connection((host, int(port)), timeout=5) for _ in range(count)
        ]
        self.opened = time.monotonic()
        self.closed_after: dict[int, float] = {}  # socket index → seconds after opening
        self.answers: dict[int, bytes] = {}
        for connection in self.sockets:
            connection.sendall(start)
        self.every, self.stop = every, threading.Event()
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self) -> None:
        while not self.stop.is_set() and len(self.closed_after) < len(self.sockets):
            alive = [i for i in range(len(self.sockets)) if i not in self.closed_after]
            readable, _, _ = select.select([self.sockets[i] for i in alive], [], [], 0)
            for i in alive:
                try:
                    if self.sockets[i] in readable:
                        data = self.sockets[i].recv(65536)
                        self.answers[i] = self.answers.get(i, b"") + data
                        if not data:
                            raise ConnectionResetError
                    self.sockets[i].send(b"a")
                except OSError:
                    self.closed_after[i] = time.monotonic() - self.opened
            self.stop.wait(self.every)

    def wait_all_closed(self, timeout: float) -> None:
        self.thread.join(timeout)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.sockets:
            connection.close()


def ask_many(server: str, count: int = 12) -> list[int]:
    def one(i: int) -> int:
        body = {"image_id": i % 16, "question": "What color is the cube?"}
        return requests.post(f"{server}/api/ask", json=body, timeout=20).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize(
    ("what", "start", "deadline"),
    [
        ("headers", b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", HEADER_TIMEOUT_S),
        (
            "body",
            b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{",
            BODY_GRACE_S,
        ),
    ],
)
def test_slow_clients_neither_lock_others_out_nor_stay(
    server: str, what: str, start: bytes, deadline: float
) -> None:
    slow = SlowClients(server, SLOW_CLIENTS, start)
    try:
        started = time.monotonic()
        assert ask_many(server) == [200] * 12  # was: 503 while the slow clients were connected
        assert requests.get(f"{server}/api/info", timeout=10).status_code == 200
        assert time.monotonic() - started < deadline, "the normal requests ran past the deadline"
        assert not slow.closed_after, "slow clients were dropped before the deadline"
        slow.wait_all_closed(timeout=deadline + 10)
        assert len(slow.closed_after) == SLOW_CLIENTS, f"{what}: some slow clients still open"
        assert deadline - 0.5 < min(slow.closed_after.values())
        assert max(slow.closed_after.values()) < deadline + 4
        if what == "body":  # told why, in the API's JSON error shape
            assert len(slow.answers) == SLOW_CLIENTS
            for answer in slow.answers.values():
                assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer
                assert answer.endswith(b' too slow; send it at once","status":408}')
    finally:
        slow.close()
    assert ask_many(server, 4) == [200] * 4


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 400),  # DNS rebinding: a page of evil.example, its name now 127.0.0.1
        ("evil.example:{port}", 400),
        ("127.0.0.1.evil.example", 400),
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST", 200),
        ("[::1]:{port}", 200),
    ],
)
def test_only_the_servers_own_host_names_are_answered(server: str, host: str, status: int):
    port = server.rsplit(":", 1)[1]
    header = host.format(port=port)
    response = requests.get(f"{server}/api/info", headers={"Host": header}, timeout=10)
    assert response.status_code == status, response.text
    if status == 400:
        error = response.json()
        assert error["status"] == 400 and header.split(":")[0] in error["error"]
        assert "127.0.0.1" in error["error"]
        assert (
            requests.post(
                f"{server}/api/ask",
                json={"image_id": IMAGE, "question": "What?"},
                headers={"Host": header},
                timeout=10,
            ).status_code
            == 400
        )


@pytest.mark.parametrize(
    "body",
    [
        '{"image_id": 3, "question": "What color is the \\ud800 cube?"}',
        '{"image_id": 3, "question": "\\udfff"}',
    ],
)
def test_a_question_that_is_not_unicode_text_is_a_422(server: str, body: str) -> None:
    response = requests.post(
        f"{server}/api/ask", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 422, response.text  # was: 500
    error = response.json()
    assert error["status"] == 422 and "question: not valid Unicode text" in error["error"]
    assert "lone surrogate" in error["error"]


def test_head_works_where_get_does_and_405_says_what_is_allowed(server: str, tiny_data: Path):
    png = tiny_data / "mini-clevr" / "images" / "val" / image_name("val", IMAGE)
    head = requests.head(f"{server}/api/images/{IMAGE}", timeout=10)
    assert head.status_code == 200 and head.content == b""  # was: 405
    assert head.headers["content-type"] == "image/png"
    assert int(head.headers["content-length"]) == png.stat().st_size
    for path in ("/", "/api/info", "/api/images", "/static/app.js"):
        response = requests.head(f"{server}{path}", timeout=10)
        assert response.status_code == 200 and response.content == b"", path

    for method, path, allowed in [
        ("POST", "/api/info", "GET, HEAD"),
        ("DELETE", f"/api/images/{IMAGE}", "GET, HEAD"),
        ("GET", "/api/ask", "POST"),
        ("PUT", "/api/ask/upload", "POST"),
    ]:
        response = requests.request(method, f"{server}{path}", timeout=10)
        assert response.status_code == 405, (method, path)
        assert response.headers.get("allow") == allowed, (method, path)  # was: no Allow
        error = response.json()
        assert error["status"] == 405 and path in error["error"]


def test_only_requests_with_their_body_in_count_against_the_limit() -> None:
    """RequestGuard with room for one request at work: a second is a JSON 503, whereas a
    request still sending its body takes no room until the body is in."""
    release = asyncio.Event()

    async def app(scope, receive, send) -> None:  # reads the body, then works until released
        while (await receive()).get("more_body"):
            pass
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def request(body: bool) -> tuple[dict, list[dict], asyncio.Queue]:
        headers = [(b"host", b"127.0.0.1")] + ([(b"content-length", b"2")] if body else [])
        scope = {
            "type": "http",
            "method": "POST" if body else "GET",
            "path": "/",
            "headers": headers,
        }
        return scope, [], asyncio.Queue()

    async def run(guard: RequestGuard, scope: dict, sent: list[dict], inbox: asyncio.Queue):
        async def send(message: dict) -> None:
            sent.append(message)

        await guard(scope, inbox.get, send)

    async def main() -> None:
        guard = RequestGuard(app, hosts=None, max_requests=1)
        (scope_a, sent_a, inbox_a), (scope_b, sent_b, inbox_b) = request(True), request(True)
        a = asyncio.create_task(run(guard, scope_a, sent_a, inbox_a))
        b = asyncio.create_task(run(guard, scope_b, sent_b, inbox_b))
        await inbox_a.put({"type": "http.request", "body": b"x", "more_body": True})
        await asyncio.sleep(0.05)
        assert guard.working == 0  # both still sending: neither counts
        await inbox_a.put({"type": "http.request", "body": b"y", "more_body": False})
        await asyncio.sleep(0.05)
        assert guard.working == 1  # a is at work
        scope_c, sent_c, inbox_c = request(False)
        await run(guard, scope_c, sent_c, inbox_c)  # no body: counted at once, and refused
        assert sent_c[0]["status"] == 503 and json.loads(sent_c[1]["body"])["status"] == 503
        release.set()
        await a
        await inbox_b.put({"type": "http.request", "body": b"xy", "more_body": False})
        await b
        assert [sent_a[0]["status"], sent_b[0]["status"], guard.working] == [200, 200, 0]

    asyncio.run(main())
