"""A local fake of Customer.io's Track API, for the profile-sync feed's tests.

Serves PUT /api/v1/customers/{identifier} (merges the attributes into that
profile) and POST /api/v1/customers/{identifier}/events (keeps one event per
`id`, as Customer.io de-duplicates, and counts every post) on 127.0.0.1, with
Basic auth. Planned faults for the next requests: "429" (with Retry-After),
"500" and "drop" (connection closed, nothing accepted). Identifiers in `refuse`
get a 400. `down()` stops listening (connections refused) and `up()` listens
again on the same port; `drop_connections()` closes kept-alive connections. `on_event` runs after an event was kept, before the
answer (a test uses it to kill the feed between acceptance and its commit).
"""

import base64
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.fake_http import FakeServer, JSONHandler

SITE_ID = "fake-site"
API_KEY = "fake-track-key-0123456789"


@dataclass
class Request:
    at: float
    method: str
    identifier: str
    body: dict[str, Any]
    status: int


@dataclass
class FakeCustomerIO:
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # id -> event
    event_posts: Counter = field(default_factory=Counter)  # id -> times posted
    requests: list[Request] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    retry_after: int = 2
    on_event: Callable[[dict[str, Any]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: FakeServer | None = None
    port: int = 0
    connections: set[Any] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeCustomerIO":
        self.server = FakeServer(("127.0.0.1", self.port), self._handler())
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.drop_connections()  # kept-alive connections too: down means down

    def drop_connections(self) -> None:
        """Close every open connection, as a server does with idle kept-alive ones."""
        with self.lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections.clear()

    down = stop

    def up(self) -> None:
        self.start()

    def env(self) -> dict[str, str]:
        return {"CIO_SITE_ID": SITE_ID, "CIO_TRACK_API_KEY": API_KEY, "CIO_TRACK_URL": self.url}

    def events_of(self, identifier: str) -> list[dict[str, Any]]:
        with self.lock:
            found = [event for who, event in self.events.values() if who == identifier]
        return sorted(found, key=lambda event: event["id"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self
        expected = "Basic " + base64.b64encode(f"{SITE_ID}:{API_KEY}".encode()).decode()

        class Handler(JSONHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with fake.lock:
                    fake.connections.add(self.connection)

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = urlsplit(self.path).path.split("/")
                # /api/v1/customers/{identifier}[/events]
                if parts[1:4] != ["api", "v1", "customers"] or len(parts) not in (5, 6):
                    return self.answer(404, {"meta": {"error": "not found"}})
                identifier = unquote(parts[4])
                if self.headers.get("Authorization") != expected:
                    return self.answer(401, {"meta": {"error": "Unauthorized request"}})
                with fake.lock:
                    fault = fake.faults.pop(0) if fake.faults else None
                status = {"429": 429, "500": 500}.get(fault or "", 200)
                if identifier in fake.refuse:
                    status = 400
                with fake.lock:
                    fake.requests.append(
                        Request(time.monotonic(), method, identifier, body, status)
                    )
                if fault == "drop":
                    return self.drop()
                if status == 429:
                    headers = {"Retry-After": str(fake.retry_after)}
                    return self.answer(429, {"meta": {"error": "rate limited"}}, headers)
                if status == 500:
                    return self.answer(500, {"meta": {"error": "internal error"}})
                if status == 400:
                    return self.answer(400, {"meta": {"error": "identifier is not valid"}})
                if len(parts) == 5 and method == "PUT":
                    with fake.lock:
                        fake.profiles.setdefault(identifier, {}).update(body)
                elif len(parts) == 6 and parts[5] == "events" and method == "POST":
                    with fake.lock:
                        fake.event_posts[body["id"]] += 1
                        fake.events.setdefault(body["id"], (identifier, body))
                    if fake.on_event is not None:
                        fake.on_event(body)
                else:
                    return self.answer(404, {"meta": {"error": "not found"}})
                return self.answer(200, {})

        return Handler
