"""Slow and hostile clients against the real server on `make run`'s defaults
(one worker, 16 threads): they cannot starve it, and its own refusals are JSON:API."""

import json
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from api.cli.serve import HEADER_READ_TIMEOUT_MS
from tests.conftest import add_member_body
from tests.server import ADD, get, post, running_server, seed

SLOW_HEADERS = 200
SLOW_BODIES = 50


@pytest.fixture
def server(config) -> Iterator[tuple[str, int]]:
    with running_server(config.database_url) as base:
        yield base, int(base.rsplit(":", 1)[1])


def connect(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the status, headers and body of the answer."""
    with connect(port, data) as sock:
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def test_half_sent_headers_and_trickled_bodies_do_not_starve_the_service(config, server):
    base, port = server
    data = seed(config.database_url, people=1, communities=1)
    body = add_member_body(data.people[0], data.communities[0])
    slow = [
        connect(port, b"POST /api/v1/ops/people/code HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(SLOW_HEADERS)
    ]
    slow += [
        connect(
            port,
            b"POST /api/v1/ops/people/code HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + data.token.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{",
        )
        for _ in range(SLOW_BODIES)
    ]
    try:
        health = [get(base, "/healthz", 5) for _ in range(10)]
        assert {status for status, _, _ in health} == {200}
        assert max(seconds for _, _, seconds in health) < 1.0
        status, _, seconds = post(base, ADD, body, data.token, str(uuid.uuid4()), 5)
        assert status == 200 and seconds < 2.0
        # A head not finished in time is cut off: the connection is not held for ever.
        time.sleep(HEADER_READ_TIMEOUT_MS / 1000 + 1)
        for sock in slow[:SLOW_HEADERS]:
            sock.settimeout(5)
            try:
                assert sock.recv(1024) == b"", "closed, without an answer"
            except ConnectionResetError:
                pass
    finally:
        for sock in slow:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed(server):
    _, port = server
    with connect(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(HEADER_READ_TIMEOUT_MS / 1000 + 5)
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < HEADER_READ_TIMEOUT_MS / 1000 + 2


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431, None),
    ],
)
def test_oversized_heads_get_json_api_refusals(server, request_bytes, status, code):
    _, port = server
    got, headers, body = exchange(port, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/vnd.api+json"
    error = json.loads(body)["errors"][0]
    assert error["status"] == str(status)
    assert error["code"] == (code or "headers_too_large")
    assert error["detail"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 600_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["garbage", "bad-header", "huge-header", "huge-url"],
)
def test_what_the_server_cannot_parse_gets_a_bare_status_never_html(server, request_bytes):
    _, port = server
    got, headers, body = exchange(port, request_bytes)
    assert got in (400, 414, 431)
    assert body == b"" and headers.get("content-length") == "0"
