"""What stands between the HTTP server and the Falcon app: absurd request heads get a
JSON:API refusal, and a body is read in full *before* the request takes one of the
app's slots, so a client that trickles its body holds only a cheap waiting thread
(the server gives each connection one, up to its connection bound), never a slot
that a real call needs.

The server itself refuses what it cannot parse or what overflows its buffer (see
api/cli/serve.py); these limits sit below its buffer so an oversized but well-formed
request is told why, in the same shape as every other refusal."""

import io
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from api.gate import MAX_BODY_BYTES
from commands.documents import Problem

log = logging.getLogger("pm_ops.serve")

RETRY_START_SECONDS = 0.5
MAX_TARGET_BYTES = 4 * 1024  # path + query string
MAX_HEAD_BYTES = 16 * 1024  # every header name and value together
JSONAPI = "application/vnd.api+json"
PROCESS_ENVIRONMENT = frozenset(os.environ)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

URI_TOO_LONG = Problem(
    414,
    "uri_too_long",
    "URI too long",
    f"The URL is longer than {MAX_TARGET_BYTES // 1024} KiB. The operations take their "
    "input in the JSON body, not in the URL.",
)
HEADERS_TOO_LARGE = Problem(
    431,
    "headers_too_large",
    "Request headers too large",
    f"The request headers add up to more than {MAX_HEAD_BYTES // 1024} KiB. Send only the "
    "Authorization, Content-Type and idempotency headers the guide lists.",
)


class Guard:
    """WSGI middleware: head limits, body read up front, at most `slots` requests in the app."""

    def __init__(self, app: WSGIApp, slots: int) -> None:
        self._app = app
        # The slots as tokens in a queue: taking one and putting it back are C calls,
        # where a threading.Semaphore is a Python Condition (a few µs every request).
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(slots):
            self._slots.put(None)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        problem = _head_problem(environ)
        if problem is not None:
            return _refuse(problem, start_response)
        _buffer_body(environ)
        self._slots.get()
        try:
            return self._app(environ, start_response)
        finally:
            self._slots.put(None)


def _head_problem(environ: dict[str, Any]) -> Problem | None:
    target = len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", ""))
    if target > MAX_TARGET_BYTES:
        return URI_TOO_LONG
    # The server starts each environ from its process's environment (granian copies
    # os.environ into it), which can be hundreds of variables, HTTP_PROXY among them:
    # they are set aside in one C-level set difference, not counted as headers.
    head = sum(
        len(name) + len(environ[name])
        for name in environ.keys() - PROCESS_ENVIRONMENT
        if name.startswith("HTTP_") or name in ("CONTENT_TYPE", "CONTENT_LENGTH")
    )
    return HEADERS_TOO_LARGE if head > MAX_HEAD_BYTES else None


def _buffer_body(environ: dict[str, Any]) -> None:
    """Read at most one byte more than the app accepts, so the app still answers 413."""
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not (chunked or (length.isdigit() and 0 < int(length) <= MAX_BODY_BYTES)):
        return  # no body, or one the app refuses by its declared length without reading
    stream = environ["wsgi.input"]
    want = MAX_BODY_BYTES + 1 if chunked else int(length)
    chunks, size = [], 0
    while size < want:
        chunk = stream.read(want - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    environ["wsgi.input"] = io.BytesIO(b"".join(chunks))


class Starting:
    """The app, once it can be built. A worker (re)started while the store is down
    cannot build it (the recorder reads the database's types); rather than crash,
    and have the server give up on a crash loop, it answers 503 (and /healthz 200)
    and keeps trying in the background."""

    def __init__(self, build: Callable[[], WSGIApp], unavailable: Problem) -> None:
        self._build = build
        self._unavailable = unavailable
        self._app: WSGIApp | None = None
        try:
            self._app = build()
        except Exception as error:
            log.warning("store unreachable at start (%s); answering 503 meanwhile", error)
            threading.Thread(target=self._keep_building, name="pm-ops-start", daemon=True).start()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        app = self._app
        if app is not None:
            return app(environ, start_response)
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"ok"}']
        return _refuse(self._unavailable, start_response, close=False)

    def _keep_building(self) -> None:
        while self._app is None:
            threading.Event().wait(RETRY_START_SECONDS)
            try:
                self._app = self._build()
            except Exception as error:
                log.debug("still cannot start: %s", error)
        log.warning("store reachable: serving")


def _refuse(
    problem: Problem, start_response: Callable[..., Any], close: bool = True
) -> list[bytes]:
    body = problem.document()
    headers = [("Content-Type", JSONAPI), ("Content-Length", str(len(body))), *problem.headers]
    start_response(
        f"{problem.status} {problem.title}",
        headers + ([("Connection", "close")] if close else []),
    )
    return [body]
