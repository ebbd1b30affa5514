"""`snmn serve`: a web page and a JSON API that show SNMN reasoning, step by step.

Pick CLEVR_val_000007.png (or upload a PNG), ask "What color is the large rubber thing?" and the
page shows the answer and, for every step, the module chosen (Find 0.97), the question words it
attended to, the attention map laid over the image and the stack depth. The page (static/:
plain HTML, CSS and JS, nothing fetched from outside) only calls the JSON API below, which
FastAPI documents at /openapi.json:

    GET  /api/info                      model, image set, limits
    GET  /api/images?offset=&limit=     image ids (those with features), URLs, suggested questions
    GET  /api/images/{id}               the PNG of image {id} (an integer checked against the split)
    POST /api/ask                       {"image_id": 7, "question": "..."} → the reasoning
    POST /api/ask/upload?question=...   body: the PNG bytes (Content-Type image/png) → the same

Safety: a request body is counted as it arrives and refused with 413 past its route's limit;
uploads are checked for type, signature, decodability and size; image ids are integers, so no
path from a request reaches the file system; every error is JSON {"error", "status"} with its
status code, and the server goes on serving. Torch work is serialised by the service's lock.

Slow and hostile clients: a connection that has not sent a request's headers within
HEADER_TIMEOUT_S of opening (or of its previous answer) is dropped, and a body must keep coming
(BODY_GRACE_S, then BODY_MIN_RATE on average) or the request ends in 408 and the connection is
closed; so 150 clients dribbling a byte a second ("slowloris") hold nothing for long. Only
requests whose body has arrived count against `max_connections` (beyond it: 503). A page on
evil.example that rebinds its name to 127.0.0.1 sends `Host: evil.example`: a loopback demo
answers only Host 127.0.0.1, localhost, ::1 or its own address, others get 400 (a demo on
0.0.0.0 is open to the network anyway). HEAD works wherever GET does; 405 lists the methods
in Allow.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.config import ServeConfig
from pipeline.demo.service import DemoError, DemoService, Reasoning

STATIC = Path(__file__).with_name("static")
JSON_BODY_LIMIT = 64 * 1024  # bytes of a JSON request (a 1,000-character question is ~1 KB)
UPLOAD_ROUTE = "/api/ask/upload"
PAGE_SIZE_MAX = 100
HEADER_TIMEOUT_S = 5.0  # a request's headers, from the connection (or the last answer) on
BODY_GRACE_S = 5.0  # a request body may take this long, plus 1 s per BODY_MIN_RATE bytes sent
BODY_MIN_RATE = 50_000  # bytes/s: a 5 MB upload on a 0.4 Mbit/s line still gets through
OPEN_CONNECTIONS_MAX = 512  # uvicorn's own cap on open connections (each slow one lasts ≤ 5 s)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        b"base-uri 'none'; frame-ancestors 'none'",
    ),
]


class Question(BaseModel):
    image_id: int  # index of the image in the served split
    question: str


class ImageEntry(BaseModel):
    id: int
    url: str
    questions: list[str]  # suggested: the split's questions about this image


class ImagePage(BaseModel):
    total: int
    offset: int
    images: list[ImageEntry]


def create_app(service: DemoService) -> FastAPI:
    """The FastAPI app over a loaded DemoService."""
    settings = service.settings
    app = FastAPI(
        title="SNMN demo",
        description="Stack Neural Module Networks on CLEVR: answers with their reasoning steps.",
        version="1",
        docs_url=None,  # the Swagger page loads scripts from a CDN; /openapi.json is enough
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limits={UPLOAD_ROUTE: settings.max_upload_bytes})
    app.add_middleware(
        RequestGuard, hosts=trusted_hosts(settings.host), max_requests=settings.max_connections
    )
    app.add_middleware(SecurityHeaders)
    _add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """The model, the image set and the request limits."""
        return service.info()

    @app.get("/api/images", response_model=ImagePage)
    def images(
        offset: int = Query(0, ge=0), limit: int = Query(24, ge=1, le=PAGE_SIZE_MAX)
    ) -> ImagePage:
        """A page of the split's images with their suggested questions."""
        ids = service.store.image_indices[offset : offset + limit].tolist()  # those present
        entries = [
            ImageEntry(id=i, url=f"/api/images/{i}", questions=service.questions(i)) for i in ids
        ]
        return ImagePage(total=len(service), offset=offset, images=entries)

    @app.get(
        "/api/images/{image_id}",
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}}}},
    )
    def image(image_id: int) -> FileResponse:
        """The PNG of one image of the split."""
        return FileResponse(service.image_path(image_id), media_type="image/png")

    @app.post("/api/ask", response_model=Reasoning)
    def ask(request: Question) -> Reasoning:
        """SNMN's answer to a question about an image of the split, step by step."""
        return service.ask(request.image_id, request.question)

    @app.post(
        UPLOAD_ROUTE,
        response_model=Reasoning,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def ask_upload(request: Request, question: str = Query(...)) -> Reasoning:
        """The same for an uploaded PNG (the body), its features extracted on the fly."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "image/png":
            raise DemoError(415, f"upload: Content-Type must be image/png, got {media_type!r}")
        service.check_question(question)
        data = await request.body()  # 413 past max_upload_bytes, while reading
        return await run_in_threadpool(service.ask_upload, data, question)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(settings: ServeConfig, tracking_uri: str = "", access_log: bool = True) -> None:
    """Load the model and the image set, then serve until interrupted."""
    import uvicorn

    service = DemoService(settings, tracking_uri)
    if settings.host not in LOOPBACK_HOSTS:
        print(
            f"serve: listening on {settings.host}: anyone who reaches this machine can use the "
            f"demo (there is no authentication)",
            file=sys.stderr,
        )
    print(f"serve: http://{settings.host}:{settings.port}/ ({len(service)} images)", flush=True)
    uvicorn.run(
        create_app(service),
        host=settings.host,
        port=settings.port,
        http=HeaderDeadline,
        limit_concurrency=max(OPEN_CONNECTIONS_MAX, settings.max_connections),
        timeout_keep_alive=5,
        server_header=False,
        access_log=access_log,
        log_level="info" if access_log else "warning",
    )


# ---------------------------------------------------------------------------------------------
# Errors: one JSON shape, {"error": "...", "status": 404}
# ---------------------------------------------------------------------------------------------


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DemoError)
    async def demo_error(request: Request, error: DemoError) -> JSONResponse:
        return error_response(error.status, str(error))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message, headers = str(error.detail), dict(error.headers or {})
        if error.status_code == 404 and message == "Not Found":
            message = f"{request.method} {request.url.path}: no such page or API route"
        if error.status_code == 405:
            allowed = sorted(set(headers.get("Allow", "").split(", ")) - {""})
            allowed += ["HEAD"] if "GET" in allowed else []  # RequestGuard answers HEAD as GET
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.url.path}: method not allowed; use {' or '.join(allowed)}"
        return error_response(error.status_code, message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", "")
            return error_response(422, f"request body: not valid JSON ({reason})")
        if tuple(first["loc"]) == ("body",):
            return error_response(
                422,
                "request body: expected a JSON object with image_id and question, sent as "
                "Content-Type application/json",
            )
        where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query"))
        given = first.get("input")
        shown = f" (got {json.dumps(given)[:60]})" if isinstance(given, (str, int)) else ""
        return error_response(422, f"{where or 'request body'}: {first['msg']}{shown}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(error).__name__}")


# ---------------------------------------------------------------------------------------------
# Slow clients, foreign Host names, HEAD; body limits; security headers
# ---------------------------------------------------------------------------------------------


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, dropping a connection that has not sent a request's headers
    within HEADER_TIMEOUT_S of opening or of its previous answer. (uvicorn has no such timeout:
    its keep-alive timer stops at the first byte, so a client sending one header byte a second
    would hold its connection for ever.)"""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers(self.cycle)

    def on_response_complete(self) -> None:
        answered = self.cycle  # a pipelined request may start a new cycle in the call below
        super().on_response_complete()
        self._await_headers(answered)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _await_headers(self, cycle) -> None:
        """Drop the connection if no request newer than `cycle` has begun by the deadline."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_late, cycle)

    def _headers_late(self, cycle) -> None:
        if self.cycle is cycle and not self.transport.is_closing():
            self.transport.close()


def trusted_hosts(host: str) -> tuple[str, ...] | None:
    """The Host names a server bound to `host` answers (None: any, on a wildcard address)."""
    return None if host in WILDCARD_HOSTS else tuple(dict.fromkeys([host, *LOOPBACK_HOSTS]))


class RequestGuard:
    """Host check, HEAD as GET, request body deadline, and at most `max_requests` at work.

    A request counts against `max_requests` from the moment its body has arrived (at once when
    it has none), so clients still sending cannot crowd out those that are done; a body that
    falls behind its deadline ends the request with 408 and the connection. (A client that
    goes on sending after an early answer, a 413 say, is dropped by HeaderDeadline.)"""

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...] | None, max_requests: int) -> None:
        self.app, self.hosts, self.max_requests = app, hosts, max_requests
        self.working = 0  # requests past their body, not yet answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        if self.hosts is not None and host not in self.hosts:
            shown = json.dumps(host[:60])
            message = f"Host {shown} is not served here; use {' or '.join(self.hosts)}"
            await error_response(400, message)(scope, receive, send)
            return
        if scope["method"] == "HEAD":  # uvicorn leaves out the body of the GET answer
            scope = {**scope, "method": "GET"}
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        body = {"done": not has_body, "bytes": 0, "counted": False}
        started = asyncio.get_running_loop().time()

        def count() -> None:
            if self.working >= self.max_requests:
                raise HTTPException(503, f"busy: {self.working} requests at work; retry shortly")
            self.working += 1
            body["counted"] = True

        async def timed_receive() -> Message:
            if body["done"]:
                return await receive()
            allowed = started + BODY_GRACE_S + body["bytes"] / BODY_MIN_RATE
            try:
                message = await asyncio.wait_for(
                    receive(), allowed - asyncio.get_running_loop().time()
                )
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"request body: {body['bytes']:,} bytes in {allowed - started:.0f} s, "
                    "too slow; send it at once",
                    headers={"Connection": "close"},
                ) from None
            body["bytes"] += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                body["done"] = True
                if message["type"] == "http.request":
                    count()
            return message

        try:
            if body["done"]:
                try:
                    count()
                except HTTPException as busy:
                    await error_response(503, str(busy.detail))(scope, receive, send)
                    return
            await self.app(scope, timed_receive, send)
        finally:
            if body["counted"]:
                self.working -= 1


def _host_name(host: str) -> str:
    """'localhost' of 'LocalHost:8000', '::1' of '[::1]:8000'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class BodyLimit:
    """Refuse a request body larger than its route's limit (JSON_BODY_LIMIT unless listed) with
    a JSON 413: a Content-Length over the limit before a byte is read, otherwise as soon as the
    bytes received pass it. (Starlette's own body limit answers some of these cases in plain
    text, past our JSON error handlers.)"""

    def __init__(self, app: ASGIApp, limits: dict[str, int]) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], JSON_BODY_LIMIT)
        too_large = f"request body larger than {limit:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            response = error_response(413, f"{too_large} (Content-Length {int(declared):,})")
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    """nosniff, no referrer and a same-origin Content-Security-Policy on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
