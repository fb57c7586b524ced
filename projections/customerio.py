"""The `customerio` feed (SPEC §8): Customer.io learns what changed.

For each change (a person joined a community, a signup code changed) the sink
PUTs the person's full values at that change (so sending again converges) and
POSTs an event whose ULID id is derived from the log position and the change's
time (so Customer.io de-duplicates a re-send). The person is identified the way
the call named them: by the email the call used, else by the Play Money id.

Under trouble: throttling (429, after Retry-After), server errors, timeouts and
refused connections make the follower wait and retry (the order per person
holds); a refusal for one person (400, 404, ...) is recorded in the table
`ops_cio_failures` with Customer.io's answer and the feed goes on; `pm-ops cio
resync` pushes again. No-ops, refused calls, replays, token and directory events
cause no event in the log the feed reads, so they send nothing.
"""

import hashlib
import http.client
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from eventsourcing.utils import get_topic

from aggregates import Community, Delivery, EmailIndex, Person, RejectedCall, Token
from commands.operations import OPERATIONS, Announcement
from projections.feed import Change, DeliveryFailed, describe
from projections.handled import check_handled, require_attributes
from projections.store import ViewsMixin
from projections.times import iso
from projections.track_api import Answer, CustomerIOSettings, TrackAPI

log = logging.getLogger("pm_ops.feed")

NAME = "customerio"
# The events Customer.io hears of, as each operation declares; the rest it is never sent.
ANNOUNCED: dict[type, Announcement] = {
    op.event: op.customerio for op in OPERATIONS if op.customerio is not None
}
LEAVES_ALONE = (
    Community,
    Delivery,
    EmailIndex,
    RejectedCall,
    Token,
    Person.Registered,  # the directory's: Customer.io has its own profiles
    Person.EmailChanged,
    *(op.event for op in OPERATIONS if op.customerio is None),
)
CHANGE_TOPICS = frozenset(get_topic(event) for event in ANNOUNCED)
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFUSED_DELAY = 5.0  # credentials refused: a person has to fix a setting


@dataclass(frozen=True)
class Sync:
    """What Customer.io is told about one person: full profile values, maybe an event."""

    person_id: int
    identifier: str
    profile: dict[str, Any]
    event: dict[str, Any] | None
    position: int | None = None  # the change's log position (None: a resync)


class Transient(Exception):
    """Customer.io did not take it now; try again later (nothing was refused for good)."""

    def __init__(self, reason: str, retry_after: float | None = None, min_delay: float = 0.0):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.min_delay = min_delay


@dataclass(frozen=True)
class Refusal:
    request: str  # "profile" or "event"
    answer: Answer


# --- what a change sends ------------------------------------------------------


def ulid(moment: datetime, seed: str) -> str:
    """A ULID whose time part is `moment` and whose other 80 bits come from `seed`."""
    millis = int(moment.timestamp() * 1000) & ((1 << 48) - 1)
    tail = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    value = (millis << 80) | tail
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def event_id(position: int, moment: datetime) -> str:
    """The same change always gets the same id; Customer.io de-duplicates by it."""
    return ulid(moment, f"pm-ops:{position}:{iso(moment)}")


def identifier_of(event: Any, person_id: int) -> str:
    """The email the call named the person by, else the Play Money id."""
    meta = getattr(event, "meta", None) or {}
    return meta.get("person_email") or str(person_id)


def profile_of(person: Person, moment: datetime) -> dict[str, Any]:
    return {
        "signup_code": person.signup_code,
        "communities": sorted(person.communities),
        "pm_ops_updated_at": int(moment.timestamp()),
    }


def check() -> None:
    """At start-up: every event is announced or left alone; announcements name real attributes."""
    check_handled(NAME, ANNOUNCED, LEAVES_ALONE)
    for event, announcement in ANNOUNCED.items():
        require_attributes(NAME, event, announcement.data)


def event_of(event: Any, position: int) -> dict[str, Any]:
    announcement = ANNOUNCED[type(event)]
    return {
        "id": event_id(position, event.timestamp),
        "name": announcement.name,
        "timestamp": int(event.timestamp.timestamp()),
        "data": {name: getattr(event, name) for name in announcement.data},
    }


def sync_of(app: Any, change: Change) -> Sync:
    """The person's values as they were right after this change (read from the log)."""
    event = change.event
    person = app.repository.get(event.originator_id, version=event.originator_version)
    return Sync(
        person.person_id,
        identifier_of(event, person.person_id),
        profile_of(person, event.timestamp),
        event_of(event, change.position),
        change.position,
    )


# --- talking to Customer.io ---------------------------------------------------


def push(api: TrackAPI, sync: Sync) -> Refusal | None:
    """PUT the profile, then POST the event (each if present). None when Customer.io
    accepted, a Refusal when it refused this person for good; Transient to retry."""
    for request in ("profile", "event"):
        try:
            if request == "profile" and sync.profile:
                answer = api.identify(sync.identifier, sync.profile)
            elif request == "event" and sync.event:
                answer = api.track(sync.identifier, sync.event)
            else:
                continue
        except (OSError, http.client.HTTPException) as error:
            raise Transient(f"Customer.io unreachable: {describe(error)}") from None
        if answer.ok:
            continue
        if answer.status in (401, 403):
            raise Transient(
                f"Customer.io refused the credentials ({answer.status}); "
                "check CIO_SITE_ID, CIO_TRACK_API_KEY and CIO_REGION",
                min_delay=REFUSED_DELAY,
            )
        if answer.transient:
            raise Transient(f"Customer.io answered {answer.status}", answer.retry_after)
        return Refusal(request, answer)
    return None


class Failures:
    """Changes Customer.io refused for good, with its answer (SPEC §8). Owned here."""

    def __init__(self, views: ViewsMixin) -> None:
        self.views = views
        self.table = views.table("ops_cio_failures")

    def create(self) -> None:
        self.views.create_views(
            [
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "position BIGINT PRIMARY KEY, person_id BIGINT NOT NULL, identifier TEXT NOT NULL, "
                "request TEXT NOT NULL, event TEXT, status INTEGER NOT NULL, answer TEXT NOT NULL, "
                "failed_at TEXT NOT NULL)"
            ]
        )

    def record(self, sync: Sync, refusal: Refusal) -> None:
        assert sync.position is not None
        with self.views.write() as cursor:
            self.views.execute(
                cursor,
                f"INSERT INTO {self.table} (position, person_id, identifier, request, event, "
                "status, answer, failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (position) DO UPDATE SET status = excluded.status, "
                "answer = excluded.answer, failed_at = excluded.failed_at",
                (
                    sync.position,
                    sync.person_id,
                    sync.identifier,
                    refusal.request,
                    orjson.dumps(sync.event).decode() if sync.event else None,
                    refusal.answer.status,
                    refusal.answer.text,
                    iso(datetime.now(UTC)),
                ),
            )

    def listed(self, person_id: int | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE person_id=%s", (person_id,)) if person_id is not None else ("", ())
        with self.views.read() as cursor:
            self.views.execute(
                cursor,
                f"SELECT position, person_id, identifier, request, event, status, answer, "
                f"failed_at FROM {self.table} {where} ORDER BY position",
                params,
            )
            return [dict(row) for row in cursor.fetchall()]

    def count(self) -> int:
        with self.views.read() as cursor:
            self.views.execute(cursor, f"SELECT COUNT(*) AS n FROM {self.table}")
            row = cursor.fetchone()
        return int(row["n"]) if row else 0

    def resolve(self, position: int) -> None:
        with self.views.write() as cursor:
            self.views.execute(cursor, f"DELETE FROM {self.table} WHERE position=%s", (position,))


class CustomerIOSink:
    name = NAME
    topics = CHANGE_TOPICS
    min_interval = 0.0  # the client paces each request at CIO_SYNC_RATE
    max_batch = 100
    from_start = False  # enabling it on an old log sends no history: `cio resync --all` does

    def __init__(self, app: Any, views: ViewsMixin, settings: CustomerIOSettings) -> None:
        check()
        self.app = app
        self.api = TrackAPI(settings)
        self.failures = Failures(views)

    def create(self) -> None:
        self.failures.create()

    def recover(self) -> int | None:
        # The Track API cannot be read back; sending a change again is harmless
        # (full values, and an event id Customer.io has already seen).
        return None

    def deliver(self, changes: list[Change], first: int, last: int) -> None:
        accepted: int | None = None
        for change in changes:
            sync = sync_of(self.app, change)
            try:
                refusal = push(self.api, sync)
            except Transient as transient:
                raise DeliveryFailed(
                    transient.reason,
                    retry_after=transient.retry_after,
                    accepted=accepted,
                    min_delay=transient.min_delay,
                ) from None
            if refusal is not None:
                log.warning(
                    "feed customerio: Customer.io refused the %s of person %s (%s %s); "
                    "listed by `pm-ops cio failures`",
                    refusal.request,
                    sync.person_id,
                    refusal.answer.status,
                    refusal.answer.text[:200],
                )
                self.failures.record(sync, refusal)
            accepted = change.position

    def failed_syncs(self) -> int:
        return self.failures.count()
