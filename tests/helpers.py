"""Helpers the test files share, in one place: calling the API through the app factory and
checking its answers, reading the event log, running the script client, and two edges
that can be made to fail (an HTTP proxy that injects faults, a TCP cable that can be pulled).

Fixtures that build on these (`server`, `make_proxy`) are in conftest.py."""

import csv
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from falcon import testing

from api.app import create_app
from api.bootstrap import Services
from commands.application import PersonRow
from tests.conftest import Directory, add_member_body, new_id
from tests.server import pm_ops

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"
JSONAPI = "application/vnd.api+json"
LEAKS = ("Traceback", 'File "', "SELECT ", "INSERT ", "psycopg", "sqlite3", "pmo_")


# --- calling the API through the app factory, and checking its answers -----------------


def post(
    client: testing.TestClient, path: str, body: Any, headers: dict[str, str], **kwargs: Any
) -> testing.Result:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    result = client.simulate_post(path, body=raw, headers=headers, **kwargs)
    assert result.status_code < 500 or result.status_code == 503, result.text
    for leak in LEAKS:
        assert leak not in result.text, f"{leak!r} leaked into {result.text}"
    assert result.headers["Content-Type"] == JSONAPI
    return result


def error_of(result: testing.Result, status: int, code: str, *phrases: str) -> dict[str, Any]:
    """The single JSON:API error of a response, checked against the contract."""
    assert result.status_code == status, result.text
    document = result.json
    assert list(document) == ["errors"]
    assert len(document["errors"]) == 1
    error = document["errors"][0]
    assert error["status"] == str(status)
    assert error["code"] == code
    assert error["title"].strip()
    assert error["detail"].strip()
    for phrase in phrases:
        assert phrase.lower() in error["detail"].lower(), error["detail"]
    return error


def pointer(error: dict[str, Any]) -> str | None:
    return error.get("source", {}).get("pointer")


def header_source(error: dict[str, Any]) -> str | None:
    return error.get("source", {}).get("header")


def attributes(result: testing.Result) -> dict[str, Any]:
    assert result.status_code == 200, result.text
    return result.json["data"]["attributes"]


def key() -> str:
    return f"k-{uuid.uuid4()}"


def add_body(directory: Directory) -> dict[str, Any]:
    return add_member_body(directory.person_id, directory.community_id)


def with_big_int(body: dict[str, Any], field: str, value: int) -> bytes:
    """The body with an integer too big for orjson to write (2**63) in `field`."""
    body["data"]["attributes"][field] = 1
    return orjson.dumps(body).replace(f'"{field}":1'.encode(), f'"{field}":{value}'.encode())


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    """Customer.io's request signature."""
    return hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()


def within(seconds: float, check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


# --- the directory and tokens ----------------------------------------------------------


def issue(services: Services, name: str, **options: Any) -> str:
    return services.app.issue_token(
        name=name,
        actor=options.pop("actor", "Customer.io"),
        scopes=list(options.pop("scopes", ("community:add", "code:set"))),
        allow_cidrs=options.pop("allow_cidrs", []),
        rate_limit=options.pop("rate_limit", None),
        cio_signing_key=options.pop("cio_signing_key", None),
    )


def add_person(services: Services, email: str | None = None) -> tuple[int, str]:
    person = new_id()
    address = email or f"p{person}@example.com"
    services.app.import_people([PersonRow(2, person, address)])
    return person, address


def more_people(services: Services, n: int) -> list[int]:
    ids = [new_id() for _ in range(n)]
    tag = uuid.uuid4().hex[:8]
    services.app.import_people(
        [PersonRow(i + 2, pid, f"p{i}.{tag}@example.com") for i, pid in enumerate(ids)]
    )
    return ids


# --- the event log ---------------------------------------------------------------------


def notes(services: Services) -> list[Any]:
    return list(services.app.recorder.select_notifications(1, 100_000))


def topics(services: Services) -> list[str]:
    return [n.topic for n in notes(services)]


def count(services: Services, suffix: str) -> int:
    return sum(1 for topic in topics(services) if topic.endswith(suffix))


def events(services: Services, suffix: str) -> list[Any]:
    return [
        services.app.mapper.to_domain_event(n) for n in notes(services) if n.topic.endswith(suffix)
    ]


def head(services: Services) -> int:
    return services.app.recorder.max_notification_id() or 0


def member_added(services: Services) -> int:
    return count(services, "Person.MemberAdded")


def deliveries(services: Services) -> int:
    return count(services, "Delivery.Recorded")


def code_changes(services: Services) -> int:
    return count(services, "Person.SignupCodeChanged")


# --- a real server in this process, and the script client as a user runs it -------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(services: Services) -> Iterator[str]:
    """The app on a loopback port, in threads of this process; yields its base URL."""
    httpd = make_server(
        "127.0.0.1",
        0,
        create_app(services),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class Run:
    """A finished `pm-ops call`: exit code, stdout, stderr."""

    def __init__(self, completed: subprocess.CompletedProcess) -> None:
        self.code = completed.returncode
        self.out = completed.stdout
        self.err = completed.stderr

    def json(self) -> Any:
        return json.loads(self.out)


def call(
    url: str, token: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Run:
    """`pm-ops call ARGS` in a subprocess with OPS_URL/OPS_TOKEN set; the token never printed."""
    environment = {**os.environ, "OPS_URL": url, "OPS_TOKEN": token, **(env or {})}
    completed = subprocess.run(
        [pm_ops(), "call", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    run = Run(completed)
    secrets = [token] + [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--token"]
    for secret in filter(None, secrets):
        assert secret not in run.out and secret not in run.err, "the token was printed"
    assert "Traceback" not in run.err
    return run


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as src:
        return list(csv.DictReader(src))


# --- edges that fail on demand ------------------------------------------------------------


class FaultProxy:
    """An HTTP proxy to the server; `plan` says what to do with the first requests:
    "forward", "503" (answer 503 without forwarding), "forward-then-503" (the server
    executes it, the client sees 503), "429" (answer 429 with Retry-After: 1)."""

    def __init__(self, upstream: str, plan: list[str] | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.plan = list(plan or [])
        self.seen: list[tuple[str, str | None, int]] = []  # path, key, status sent
        self.times: list[float] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    action = proxy.plan.pop(0) if proxy.plan else "forward"
                    proxy.times.append(time.monotonic())
                key = self.headers.get("X-CIO-Idempotency-Key")
                if action in ("forward", "forward-then-503"):
                    status, headers, payload = proxy.forward(self.path, dict(self.headers), body)
                    if action == "forward-then-503":
                        status, headers, payload = proxy.fault(503)
                else:
                    status, headers, payload = proxy.fault(int(action))
                with proxy.lock:
                    proxy.seen.append((self.path, key, status))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def forward(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            conn.request("POST", path, body, keep)
            response = conn.getresponse()
            payload = response.read()
            relayed = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() in ("content-type", "idempotent-replayed", "retry-after")
            ]
            return response.status, relayed, payload
        finally:
            conn.close()

    @staticmethod
    def fault(status: int) -> tuple[int, list[tuple[str, str]], bytes]:
        code = {503: "unavailable", 429: "rate_limited"}[status]
        document = {
            "errors": [{"status": str(status), "code": code, "detail": f"injected {status}"}]
        }
        headers = [("Content-Type", "application/vnd.api+json")]
        if status in (429, 503):
            headers.append(("Retry-After", "1"))
        return status, headers, json.dumps(document).encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Cable:
    """A TCP forwarder in front of PostgreSQL that can be pulled like a cable."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(self._target)
            except OSError:
                return
            with self._lock:
                self._sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
