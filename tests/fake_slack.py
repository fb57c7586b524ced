"""A local fake of the Slack Web API, for the feed's tests.

Serves chat.postMessage (recording every accepted post with its metadata),
conversations.history and conversations.list on 127.0.0.1 at a random port.
Planned faults for the next posts: "429" (with Retry-After), "500", "drop"
(connection closed, post NOT accepted) and "accept_drop" (post accepted, then
the connection is closed before the answer: the caller cannot know).
`on_accept` is called after a post was recorded and before it is answered
(a test uses it to kill the runner between Slack's acceptance and its commit).
"""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fake_http import FakeServer, JSONHandler

CHANNEL_ID = "C0FEED0001"
CHANNEL_NAME = "ops-webhooks"


@dataclass
class Post:
    at: float
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    ts: str

    @property
    def body(self) -> str:
        return "\n".join(b.get("text", {}).get("text", "") for b in self.blocks) or self.text


@dataclass
class FakeSlack:
    posts: list[Post] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    attempts: int = 0
    retry_after: int = 1
    on_accept: Callable[[Post], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: FakeServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def start(self) -> "FakeSlack":
        fake = self

        class Handler(JSONHandler):
            content_type = "application/json; charset=utf-8"

            def do_GET(self) -> None:
                self._handle({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                if "json" in (self.headers.get("Content-Type") or ""):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in parse_qs(raw).items()}
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                self._handle({**query, **params})

            def _handle(self, params: dict[str, Any]) -> None:
                method = urlsplit(self.path).path.rsplit("/", 1)[-1]
                if not (self.headers.get("Authorization") or "").startswith("Bearer xoxb-"):
                    return self.answer(200, {"ok": False, "error": "not_authed"})
                if method == "chat.postMessage":
                    return fake._post(self, params)
                if method == "conversations.history":
                    return self.answer(200, fake._history())
                if method == "conversations.list":
                    return self.answer(
                        200,
                        {
                            "ok": True,
                            "channels": [{"id": CHANNEL_ID, "name": CHANNEL_NAME}],
                            "response_metadata": {"next_cursor": ""},
                        },
                    )
                return self.answer(200, {"ok": False, "error": "unknown_method"})

        self.server = FakeServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def _post(self, handler: Any, params: dict[str, Any]) -> None:
        with self.lock:
            self.attempts += 1
            fault = self.faults.pop(0) if self.faults else None
        if fault == "429":
            return handler.answer(
                429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(self.retry_after)}
            )
        if fault == "500":
            return handler.answer(500, {"ok": False, "error": "internal_error"})
        if fault == "drop":
            return handler.drop()
        blocks = params.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        with self.lock:
            post = Post(
                at=time.monotonic(),
                channel=params.get("channel", ""),
                text=params.get("text", ""),
                blocks=blocks,
                metadata=metadata,
                ts=f"{1700000000 + len(self.posts)}.000100",
            )
            self.posts.append(post)
        if self.on_accept is not None:
            self.on_accept(post)
        if fault == "accept_drop":
            return handler.drop()
        return handler.answer(
            200,
            {
                "ok": True,
                "channel": CHANNEL_ID,
                "ts": post.ts,
                "message": {"text": post.text, "ts": post.ts},
            },
        )

    def _history(self) -> dict[str, Any]:
        with self.lock:
            messages = [
                {"type": "message", "ts": p.ts, "text": p.text, "metadata": p.metadata}
                for p in reversed(self.posts)
            ]
        return {"ok": True, "messages": messages[:100], "has_more": len(messages) > 100}

    def lines(self) -> list[str]:
        with self.lock:
            return [line for post in self.posts for line in post.body.splitlines() if line]
