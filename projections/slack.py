"""The #ops-webhooks feed: one readable line per call, posted to Slack.

Exactly-once towards Slack, as far as Slack allows:
- the feed's position (in the tracking table) advances only after Slack
  accepted the post;
- every post carries message metadata naming the log positions it covers, so
  after a crash (or a post whose answer was lost) the feed reads the channel's
  recent history and skips what is already there instead of posting it twice;
- posts are paced to about one per second; calls arriving faster are grouped
  into one Block Kit message (within Slack's 50 blocks / 3,000 characters);
- 429 is retried after Retry-After, 5xx and connection errors with backoff.
Without SLACK_BOT_TOKEN the same lines go to the log (the console sink).
"""

import hashlib
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from eventsourcing.utils import get_topic
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from aggregates import Delivery, RejectedCall
from projections.model import notifications
from projections.store import StalePosition, ViewsMixin

log = logging.getLogger("pm_ops.feed")

FEED_EVENT_TYPE = "pm_ops_feed"
FEED_TOPICS = frozenset({get_topic(Delivery.Recorded), get_topic(RejectedCall.Recorded)})
MAX_LINES = 100  # calls per message
MAX_BLOCKS = 50  # Slack's limit per message
SECTION_CHARS = 3000  # Slack's limit per section text
LINE_CHARS = 500
HISTORY_PAGES = 3

_SECRETS = re.compile(
    r"(pmo_[0-9a-f]{32}_\S+|xox[a-z]-[\w-]+|(?i:bearer)\s+\S+)",
)


class Interrupted(Exception):
    """The runner is stopping."""


@dataclass(frozen=True)
class FeedLine:
    kind: str  # "ok", "noop" or "fail"
    text: str


ICONS = {"ok": "✅", "noop": "➖", "fail": "❌"}


def _clean(value: Any, limit: int = 300) -> str:
    text = _SECRETS.sub("[redacted]", str(value))
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(value: str | None) -> str:
    return "(platform default)" if value is None else f"“{_clean(value, 80)}”"


def feed_line(event: Any) -> FeedLine | None:
    """One line for a call (a delivery or a rejected call); None for other events."""
    meta = getattr(event, "meta", None) or {}
    operation = _clean(event.operation, 40)
    if isinstance(event, Delivery.Recorded):
        kind, what = _describe_delivery(event)
    elif isinstance(event, RejectedCall.Recorded):
        kind, what = "fail", f"{event.status} {_clean(event.code, 40)}: {_clean(event.detail)}"
    else:
        return None
    parts = [f"{ICONS[kind]} *{operation}* {what}"]
    if meta.get("actor"):
        parts.append(_clean(meta["actor"], 60))
    if meta.get("workflow"):
        parts.append(f"workflow “{_clean(meta['workflow'], 100)}”")
    if meta.get("idempotency_key"):
        parts.append(f"key `{_clean(meta['idempotency_key'], 100)}`")
    text = " · ".join(parts)
    return FeedLine(kind, text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…")


def _describe_delivery(event: Any) -> tuple[str, str]:
    try:
        document = orjson.loads(event.body) if event.body else {}
    except orjson.JSONDecodeError:
        document = {}
    if event.status != 200:
        errors = document.get("errors") or [{}]
        detail = errors[0].get("detail") or event.outcome
        return "fail", f"{event.status} {_clean(event.outcome, 40)}: {_clean(detail)}"
    attributes = (document.get("data") or {}).get("attributes") or {}
    person = attributes.get("personId")
    if event.operation == "add-member":
        community = attributes.get("communityId")
        if event.outcome == "added":
            return "ok", f"person {person} added to community {community}"
        return "noop", f"person {person} already in community {community}, nothing changed"
    if event.operation == "set-code":
        code = attributes.get("code")
        if event.outcome == "changed":
            previous = attributes.get("previousCode")
            return "ok", f"person {person} signup code {_code(previous)} → {_code(code)}"
        return "noop", f"person {person} already had signup code {_code(code)}, nothing changed"
    return ("ok" if event.status == 200 else "fail"), _clean(event.outcome)


def render(lines: list[FeedLine], first: int, last: int, feed_id: str) -> dict[str, Any]:
    """A chat.postMessage payload: sections of whole lines within Slack's limits."""
    sections: list[str] = []
    current = ""
    for line in lines:
        candidate = f"{current}\n{line.text}" if current else line.text
        if len(candidate) > SECTION_CHARS:
            sections.append(current)
            current = line.text
        else:
            current = candidate
    if current:
        sections.append(current)
    assert len(sections) <= MAX_BLOCKS
    counts = {kind: sum(1 for line in lines if line.kind == kind) for kind in ICONS}
    if len(lines) == 1:
        text = lines[0].text
    else:
        text = (
            f"{len(lines)} calls: {counts['ok']} succeeded, {counts['noop']} no-op, "
            f"{counts['fail']} failed"
        )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}} for section in sections
        ],
        "metadata": {
            "event_type": FEED_EVENT_TYPE,
            "event_payload": {"feed": feed_id, "first": first, "last": last, "calls": len(lines)},
        },
        "unfurl_links": False,
        "unfurl_media": False,
    }


class Sink(Protocol):
    def recover(self) -> int | None: ...

    def deliver(self, lines: list[FeedLine], first: int, last: int) -> None: ...


class ConsoleSink:
    """No SLACK_BOT_TOKEN: the same lines go to the service log."""

    def __init__(self) -> None:
        self.interrupt = threading.Event()

    def recover(self) -> int | None:
        return None

    def deliver(self, lines: list[FeedLine], first: int, last: int) -> None:
        for line in lines:
            log.info("%s", line.text)


def feed_identity(settings: Any) -> str:
    """Which log this feed reports on, so two environments can share a channel."""
    return hashlib.sha256(settings.store.identity().encode()).hexdigest()[:16]


class SlackSink:
    def __init__(
        self,
        token: str,
        channel: str,
        feed_id: str,
        *,
        base_url: str | None = None,
        min_interval: float = 1.0,
        timeout: int = 10,
    ) -> None:
        base = base_url or WebClient.BASE_URL
        if not base.endswith("/"):
            base += "/"
        # Posting: only 429 is retried by the client (a 429 was certainly not
        # accepted). 5xx and dropped connections may hide an accepted post, so
        # those are retried below, after looking at the channel's history.
        self.poster = WebClient(
            token=token,
            base_url=base,
            timeout=timeout,
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=3)],
        )
        self.reader = WebClient(
            token=token,
            base_url=base,
            timeout=timeout,
            retry_handlers=[
                RateLimitErrorRetryHandler(max_retry_count=3),
                ServerErrorRetryHandler(max_retry_count=2),
                ConnectionErrorRetryHandler(max_retry_count=2),
            ],
        )
        self.channel = channel
        self.feed_id = feed_id
        self.min_interval = min_interval
        self.interrupt = threading.Event()
        self._channel_id: str | None = None
        self._last_post = 0.0

    # --- history ------------------------------------------------------------

    def channel_id(self) -> str | None:
        if self._channel_id:
            return self._channel_id
        name = self.channel.lstrip("#")
        if not self.channel.startswith("#") and re.fullmatch(r"[CGD][A-Z0-9]{6,}", name):
            self._channel_id = name
            return name
        cursor = None
        for _ in range(50):
            response = self.reader.conversations_list(
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=1000,
                cursor=cursor,
            )
            for channel in response.get("channels") or []:
                if channel.get("name") == name:
                    self._channel_id = channel["id"]
                    return self._channel_id
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return None

    def recover(self) -> int | None:
        """The last log position this feed already posted, per the channel's history."""
        channel = self.channel_id()
        if channel is None:
            log.warning(
                "feed: cannot find channel %s to check for earlier posts; "
                "a post interrupted by a crash might be repeated",
                self.channel,
            )
            return None
        best: int | None = None
        cursor = None
        for _ in range(HISTORY_PAGES):
            response = self.reader.conversations_history(
                channel=channel, limit=100, include_all_metadata=True, cursor=cursor
            )
            for message in response.get("messages") or []:
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if metadata.get("event_type") != FEED_EVENT_TYPE:
                    continue
                if payload.get("feed") != self.feed_id:
                    continue
                last = int(payload.get("last") or 0)
                best = last if best is None else max(best, last)
            if best is not None or not response.get("has_more"):
                break
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return best

    # --- posting ------------------------------------------------------------

    def deliver(self, lines: list[FeedLine], first: int, last: int) -> None:
        payload = render(lines, first, last, self.feed_id)
        uncertain = False
        attempt = 0
        while True:
            self._pace()
            if uncertain:
                try:
                    seen = self.recover()
                except Exception as error:
                    log.warning("feed: cannot read channel history (%s)", type(error).__name__)
                    self._sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                if seen is not None and seen >= last:
                    log.info("feed: positions %s–%s were already posted", first, last)
                    return
            try:
                response = self.poster.chat_postMessage(channel=self.channel, **payload)
            except SlackApiError as error:
                self._last_post = time.monotonic()
                status = error.response.status_code
                data = error.response.data
                reason = data.get("error") if isinstance(data, dict) else None
                if status == 429:
                    delay = float(error.response.headers.get("Retry-After", 1) or 1)
                elif status >= 500:
                    uncertain, delay = True, self._backoff(attempt)
                else:
                    delay = max(5.0, self._backoff(attempt))
                    log.error("feed: Slack refused the post (%s, %s)", status, reason)
                log.warning("feed: post failed (%s %s); retrying in %.1fs", status, reason, delay)
            except Exception as error:  # connection dropped, timeout: maybe accepted
                self._last_post = time.monotonic()
                uncertain, delay = True, self._backoff(attempt)
                log.warning(
                    "feed: post failed (%s); retrying in %.1fs", type(error).__name__, delay
                )
            else:
                self._last_post = time.monotonic()
                self._channel_id = self._channel_id or response.get("channel")
                return
            attempt += 1
            self._sleep(delay)

    def _pace(self) -> None:
        wait = self._last_post + self.min_interval - time.monotonic()
        if wait > 0:
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        if self.interrupt.wait(seconds):
            raise Interrupted

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(30.0, 0.5 * 2**attempt) * random.uniform(0.8, 1.2)

    def ready_in(self) -> float:
        return max(0.0, self._last_post + self.min_interval - time.monotonic())


class SlackFeed:
    """The feed as a follower of the log; the Runner gives it its lock."""

    name = "slack"

    def __init__(self, app: Any, views: ViewsMixin, sink: Any) -> None:
        self.app = app
        self.views = views
        self.sink = sink
        self._recovered = False

    def create(self) -> None:
        self.views.create_views([])

    def position(self) -> int:
        return self.views.position(self.name)

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def on_activate(self) -> None:
        self._recovered = False

    def interrupt(self) -> None:
        self.sink.interrupt.set()

    def catch_up(self, *, max_batches: int | None = None) -> int:
        try:
            return self._catch_up()
        except Interrupted:
            return 0
        except StalePosition as stale:
            log.info("%s", stale)
            return 0

    def _catch_up(self) -> int:
        position = self.position()
        if not self._recovered:
            posted = self.sink.recover()
            self._recovered = True
            if posted is not None and posted > position:
                log.info(
                    "feed: Slack already has positions up to %s; not posting them again", posted
                )
                self._commit(position, posted)
                position = posted
        if position >= self.head():
            return 0
        # Let calls that arrive while we wait for our turn join this message.
        wait = getattr(self.sink, "ready_in", lambda: 0.0)()
        if wait > 0 and self.sink.interrupt.wait(wait):
            raise Interrupted
        head = self.head()
        lines: list[FeedLine] = []
        last = position
        for note in notifications(self.app, start=position + 1, stop=head, batch=200):
            if note.topic in FEED_TOPICS:
                line = feed_line(self.app.mapper.to_domain_event(note))
                if line is not None:
                    if len(lines) == MAX_LINES:
                        break
                    lines.append(line)
            last = note.id
        if last == position:
            return 0
        if lines:
            self.sink.deliver(lines, position + 1, last)
        self._commit(position, last)
        return last - position

    def _commit(self, expected: int, position: int) -> None:
        with self.views.write() as cursor:
            self.views.claim(cursor, self.name, expected)
            self.views.advance(cursor, self.name, position)


def make_sink(config: Any, *, min_interval: float = 1.0) -> Any:
    if not config.slack_bot_token:
        return ConsoleSink()
    return SlackSink(
        config.slack_bot_token,
        config.slack_channel,
        feed_identity(config),
        base_url=config.slack_api_url,
        min_interval=min_interval,
    )
