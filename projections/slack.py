"""The #ops-webhooks feed's sinks: Slack, or the service log without a token.

Exactly-once towards Slack, as far as Slack allows (the follower in
projections/feed.py moves the position only after a post was accepted):
- every post carries message metadata naming the log positions it covers, so
  after a crash (or a post whose answer was lost) `recover` reads the channel's
  recent history and the follower skips what is already there;
- posts are paced to about one per second; calls arriving faster are grouped
  into one Block Kit message (within Slack's 50 blocks / 3,000 characters);
- 429 is retried after Retry-After, 5xx and connection errors with backoff.
The words of each line live in projections/feed_lines.py.
"""

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from aggregates import Community, Delivery, EmailIndex, Person, RejectedCall, Token
from projections.feed import Change, DeliveryFailed, describe
from projections.feed_lines import ICONS, FeedLine, feed_line
from projections.handled import check_handled

log = logging.getLogger("pm_ops.feed")

FEED_EVENT_TYPE = "pm_ops_feed"
# One line per call (feed_lines.py words each); what calls changed is not the feed's.
FEED_EVENTS = (Delivery.Recorded, RejectedCall.Recorded)
LEAVES_ALONE = (Community, EmailIndex, Person, Token)
FEED_TOPICS = frozenset(get_topic(event) for event in FEED_EVENTS)
MAX_LINES = 100  # calls per message
MAX_BLOCKS = 50  # Slack's limit per message
SECTION_CHARS = 3000  # Slack's limit per section text
HISTORY_PAGES = 3
REFUSED_DELAY = 5.0  # a refusal (bad token, unknown channel) needs a person: retry slowly


@dataclass(frozen=True)
class SlackSettings:
    """What the Slack sink needs, built by the composition root from the environment."""

    token: str | None = None
    channel: str = "#ops-webhooks"
    api_url: str | None = None


def feed_identity(store_identity: str) -> str:
    """Which log this feed reports on, so two environments can share a channel."""
    return hashlib.sha256(store_identity.encode()).hexdigest()[:16]


def lines_of(changes: list[Change]) -> list[FeedLine]:
    return [line for change in changes if (line := feed_line(change.event)) is not None]


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


class ConsoleSink:
    """No SLACK_BOT_TOKEN: the same lines go to the service log."""

    name = "slack"
    topics = FEED_TOPICS
    max_batch = MAX_LINES
    from_start = True
    min_interval = 0.0  # the log has no rate limit

    def create(self) -> None:
        pass

    def recover(self) -> int | None:
        return None

    def deliver(self, changes: list[Change], first: int, last: int) -> None:
        for line in lines_of(changes):
            log.info("%s", line.text)


class SlackSink:
    name = "slack"
    topics = FEED_TOPICS
    max_batch = MAX_LINES
    from_start = True
    event_type = FEED_EVENT_TYPE  # what its posts' metadata say they are (recover reads it)

    def __init__(
        self,
        settings: SlackSettings,
        feed_id: str,
        *,
        min_interval: float = 1.0,
        timeout: int = 10,
    ) -> None:
        assert settings.token, "the Slack sink needs a token (else the console sink)"
        base = settings.api_url or WebClient.BASE_URL
        if not base.endswith("/"):
            base += "/"
        # Posting: only 429 is retried by the client (a 429 was certainly not
        # accepted). 5xx and dropped connections may hide an accepted post, so
        # the follower retries those, after looking at the channel's history.
        self.poster = WebClient(
            token=settings.token,
            base_url=base,
            timeout=timeout,
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=3)],
        )
        self.reader = WebClient(
            token=settings.token,
            base_url=base,
            timeout=timeout,
            retry_handlers=[
                RateLimitErrorRetryHandler(max_retry_count=3),
                ServerErrorRetryHandler(max_retry_count=2),
                ConnectionErrorRetryHandler(max_retry_count=2),
            ],
        )
        self.channel = settings.channel
        self.feed_id = feed_id
        self.min_interval = min_interval
        self._channel_id: str | None = None

    def create(self) -> None:
        pass

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
                "feed %s: cannot find channel %s to check for earlier posts; "
                "a post interrupted by a crash might be repeated",
                self.name,
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
                if metadata.get("event_type") != self.event_type:
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

    def message(self, changes: list[Change], first: int, last: int) -> dict[str, Any] | None:
        """The chat.postMessage payload for these changes (None: nothing to post)."""
        lines = lines_of(changes)
        return render(lines, first, last, self.feed_id) if lines else None

    def deliver(self, changes: list[Change], first: int, last: int) -> None:
        message = self.message(changes, first, last)
        if message is None:
            return
        try:
            response = self.poster.chat_postMessage(channel=self.channel, **message)
        except SlackApiError as error:
            status = error.response.status_code
            data = error.response.data
            reason = f"Slack {status} {data.get('error') if isinstance(data, dict) else ''}"
            if status == 429:
                retry_after = float(error.response.headers.get("Retry-After", 1) or 1)
                raise DeliveryFailed(reason.strip(), retry_after=retry_after) from None
            if status >= 500:
                raise DeliveryFailed(reason.strip(), uncertain=True) from None
            log.error("feed %s: Slack refused the post (%s)", self.name, reason.strip())
            raise DeliveryFailed(reason.strip(), min_delay=REFUSED_DELAY) from None
        except Exception as error:  # connection dropped, timeout: maybe accepted
            raise DeliveryFailed(describe(error), uncertain=True) from None
        self._channel_id = self._channel_id or response.get("channel")


def slack_sink(settings: SlackSettings, store_identity: str, *, min_interval: float = 1.0) -> Any:
    """The Slack sink, or the console sink when there is no token."""
    check_handled("slack", FEED_EVENTS, LEAVES_ALONE)
    if not settings.token:
        return ConsoleSink()
    return SlackSink(settings, feed_identity(store_identity), min_interval=min_interval)
