"""One follower for every outbound feed (Slack, Customer.io, ...).

A feed reads the log in order and hands what it finds to a *sink*, the only part
that knows the destination. The follower owns the rest, once for every sink:
- it reads only the sink's topics (other events just move the position on);
- it paces (the sink's `min_interval` between deliveries) and groups whatever
  arrived meanwhile into one batch (at most the sink's `max_batch` changes);
- it moves its position (the tracking table) only after the sink accepted;
- it retries a failed delivery with backoff, or after the delay the sink names
  (Retry-After), logging one line per retry, never a traceback for an outage;
- after a start, a take-over or a failure that may hide an accepted delivery,
  it asks the sink what the destination already holds (`recover`) and sends
  only what comes after;
- it stops waiting as soon as the runner stops.

A new destination is a new sink class and its settings (see projections/feeds.py).
"""

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from projections.projection import GATHER_SECONDS
from projections.store import StalePosition, ViewsMixin

log = logging.getLogger("pm_ops.feed")

MAX_BACKOFF = 30.0


class Interrupted(Exception):
    """The runner is stopping."""


class FeedOff(Exception):
    """The feed is not configured; the message says what to set."""


class DeliveryFailed(Exception):
    """A sink could not deliver a batch; the follower retries it.

    - retry_after: wait exactly this long (the destination said so, e.g. 429);
    - uncertain: the destination may have accepted it (5xx, a lost answer), so ask
      the sink what it holds before sending again;
    - accepted: the batch's changes up to this position were accepted (the
      follower records that progress before retrying the rest);
    - min_delay: wait at least this long (a refusal a person has to fix)."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        uncertain: bool = False,
        accepted: int | None = None,
        min_delay: float = 0.0,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.uncertain = uncertain
        self.accepted = accepted
        self.min_delay = min_delay


@dataclass(frozen=True)
class Change:
    """One event of the sink's topics and its position in the log."""

    position: int
    event: Any


class Source(Protocol):
    """What a feed follows: a sequence numbered by increasing positions."""

    def head(self) -> int: ...

    def changes(self, after: int, limit: int, stop: int, topics: frozenset[str]) -> list[Change]:
        """Up to `limit` changes after `after` and up to `stop`, in order."""
        ...


class LogSource:
    """The event log: positions are notification ids; a change is a domain event."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def changes(self, after: int, limit: int, stop: int, topics: frozenset[str]) -> list[Change]:
        notes = self.app.recorder.select_notifications(
            after + 1, limit, stop=stop, topics=sorted(topics)
        )
        return [Change(note.id, self.app.mapper.to_domain_event(note)) for note in notes]


class Sink(Protocol):
    name: str  # the projection's name (and its tracking row)
    topics: frozenset[str]  # the event topics it is given
    min_interval: float  # seconds between two deliveries
    max_batch: int  # changes per delivery
    from_start: bool  # False: a first start begins at the head (the past is not sent)

    def create(self) -> None:
        """Create the sink's own tables, if it has any."""

    def recover(self) -> int | None:
        """The last log position the destination already holds (None: unknown)."""

    def deliver(self, changes: list[Change], first: int, last: int) -> None:
        """Send the changes at positions first..last; raise DeliveryFailed if not accepted."""


class Feed:
    """The follower; a Runner gives it its lock and calls catch_up."""

    gather_seconds = GATHER_SECONDS

    def __init__(
        self, app: Any, views: ViewsMixin, sink: Sink, source: Source | None = None
    ) -> None:
        self.app = app
        self.views = views
        self.sink = sink
        self.source = source or LogSource(app)
        # A feed of another source (the checkpoints) is not woken by every write to the
        # log: it polls (a witness feed woken a few hundred times a second by the API's
        # writes asked for the latest checkpoint each time).
        self.wakes_on_log = isinstance(self.source, LogSource)
        self.name = sink.name
        self._stop = threading.Event()
        self._recovered = False
        self._last_attempt = 0.0

    def create(self) -> None:
        self.views.create_views([])
        self.sink.create()

    @property
    def live_batch(self) -> int:
        return self.sink.max_batch

    def position(self) -> int:
        return self.views.position(self.name)

    def head(self) -> int:
        return self.source.head()

    def on_activate(self) -> None:
        self._recovered = False

    def mark_start(self) -> None:
        """Where a feed that does not send the past begins: the head of the log when a
        process first starts with the feed configured, not when its runner first runs
        (later: calls made between the two would never be sent). The first mark stands."""
        head = self.head()
        with self.views.write() as cursor:
            self.views.execute(cursor, self.views.tracking.begin, (self.name, head))

    def interrupt(self) -> None:
        self._stop.set()

    def catch_up(self, *, max_batches: int | None = None) -> int:
        """Deliver one batch (after pacing); returns how many positions it moved."""
        try:
            return self._catch_up()
        except Interrupted:
            return 0
        except StalePosition as stale:
            log.info("%s", stale)
            self._recovered = False
            return 0

    def _catch_up(self) -> int:
        position = self._start()
        if position >= self.head():
            return 0
        # Let changes that arrive while we wait for our turn join this batch.
        self._pace()
        head = self.head()
        changes = self.source.changes(position, self.sink.max_batch, head, self.sink.topics)
        last = changes[-1].position if len(changes) >= self.sink.max_batch else head
        if last <= position:
            return 0
        if changes:
            position = self._deliver(changes, position, last)
        self._commit(position, last)
        return last - position

    def _start(self) -> int:
        """Our position, after asking the sink what it holds (once per activation)."""
        position = self.position()
        if self._recovered:
            return position
        if not self.sink.from_start and not self._has_position():
            head = self.head()
            log.info(
                "feed %s: first start; beginning at the head of the log (position %s), "
                "earlier changes are not sent",
                self.name,
                head,
            )
            self._commit(position, head)
            self._recovered = True
            return head
        held = self._recover()
        self._recovered = True
        if held is not None and held > position:
            log.info("feed %s: the destination already has positions up to %s", self.name, held)
            self._commit(position, held)
            return held
        return position

    def _deliver(self, changes: list[Change], position: int, last: int) -> int:
        """Hand the batch to the sink until it is accepted; returns the position
        already committed (moved on when the sink accepted part of the batch)."""
        attempt = 0
        uncertain = False
        while True:
            if uncertain:
                held = self._recover()
                if held is not None and held >= last:
                    log.info("feed %s: positions up to %s were already delivered", self.name, last)
                    return position
                if held is not None and held > position:
                    changes = [change for change in changes if change.position > held]
            self._pace()
            try:
                self.sink.deliver(changes, position + 1, last)
                return position
            except DeliveryFailed as failure:
                reason, uncertain = failure.reason, failure.uncertain
                delay = failure.retry_after
                if failure.accepted is not None and failure.accepted > position:
                    self._commit(position, failure.accepted)
                    position = failure.accepted
                    changes = [change for change in changes if change.position > position]
                    attempt = 0
                delay = max(failure.min_delay, backoff(attempt) if delay is None else delay)
            except Interrupted:
                raise
            except Exception as error:  # an unforeseen failure: it may have been delivered
                reason, uncertain = describe(error), True
                delay = backoff(attempt)
            finally:
                self._last_attempt = time.monotonic()
            log.warning(
                "feed %s: delivery failed (%s); retrying in %.1fs", self.name, reason, delay
            )
            attempt += 1
            self._sleep(delay)

    def _recover(self) -> int | None:
        """Ask the sink what the destination holds, retrying until it can answer."""
        attempt = 0
        while True:
            try:
                return self.sink.recover()
            except Interrupted:
                raise
            except Exception as error:
                delay = backoff(attempt)
                log.warning(
                    "feed %s: cannot ask the destination what it already has (%s); "
                    "retrying in %.1fs",
                    self.name,
                    describe(error),
                    delay,
                )
                attempt += 1
                self._sleep(delay)

    def _pace(self) -> None:
        wait = self._last_attempt + self.sink.min_interval - time.monotonic()
        if wait > 0:
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Interrupted

    def _commit(self, expected: int, position: int) -> None:
        with self.views.write() as cursor:
            self.views.claim(cursor, self.name, expected)
            self.views.advance(cursor, self.name, position)

    def _has_position(self) -> bool:
        return self.views.has_position(self.name)


def backoff(attempt: int) -> float:
    return min(MAX_BACKOFF, 0.5 * 2**attempt) * random.uniform(0.8, 1.2)


def describe(error: BaseException) -> str:
    """An error in one short line, for a log: its type and first line, no traceback."""
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
