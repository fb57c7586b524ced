"""What the projections derive from events, as plain Python.

The SQL projections store the same things; `replay` computes them straight
from the log (for `state --as-of` and for `verify`, which compares the two).
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic

from aggregates import Community, Person, Token, normalise_email
from projections.log import read_ahead, read_log

PERSON_EVENTS = (
    Person.Registered,
    Person.EmailChanged,
    Person.MemberAdded,
    Person.SignupCodeChanged,
)
COMMUNITY_EVENTS = (Community.Created, Community.Renamed)
TOKEN_EVENTS = (Token.Issued, Token.Revoked, Token.Rotated)
AUDITED_EVENTS = (Person.MemberAdded, Person.SignupCodeChanged, Person.EmailChanged, *TOKEN_EVENTS)

STATE_TOPICS = frozenset(get_topic(cls) for cls in PERSON_EVENTS + COMMUNITY_EVENTS)
AUDIT_TOPICS = frozenset(get_topic(cls) for cls in PERSON_EVENTS + TOKEN_EVENTS)

AUDIT_COLUMNS = (
    "position",
    "at",
    "operation",
    "event",
    "actor",
    "token",
    "person_id",
    "email",
    "community_id",
    "previous_value",
    "new_value",
    "workflow",
    "idempotency_key",
    "request_id",
    "source_address",
)


def iso(moment: datetime) -> str:
    """A fixed-width UTC timestamp, so text comparison is time order on both stores."""
    if moment.tzinfo is UTC and moment.year >= 1000:  # every event's: isoformat is C, no strftime
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """ISO 8601 (a date alone means its midnight, UTC unless an offset is given)."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event_name(event: Any) -> str:
    return type(event).__name__


@dataclass(frozen=True)
class Subject:
    """Who an event is about: a person (id and email at the time) or a token."""

    person_id: int | None = None
    email: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    position: int
    at: str
    operation: str
    event: str
    actor: str | None
    token: str | None
    person_id: int | None
    email: str | None
    community_id: int | None
    previous_value: str | None
    new_value: str | None
    workflow: str | None
    idempotency_key: str | None
    request_id: str | None
    source_address: str | None

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in AUDIT_COLUMNS)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in AUDIT_COLUMNS}


def next_subject(event: Any, subject: Subject | None) -> Subject | None:
    """The subject after this event, if the event introduces or changes it."""
    if isinstance(event, Person.Registered):
        return Subject(person_id=event.person_id, email=event.email)
    if isinstance(event, Person.EmailChanged):
        base = subject or Subject()
        return Subject(person_id=base.person_id, email=event.email)
    if isinstance(event, Token.Issued):
        return Subject(token=event.name)
    return None


def _token_summary(event: Any) -> str:
    parts = [f"actor={event.actor}", "scopes=" + ",".join(event.scopes)]
    if event.allow_cidrs:
        parts.append("allow=" + ",".join(event.allow_cidrs))
    if event.rate_limit:
        parts.append(f"rate_limit={event.rate_limit}/min")
    if getattr(event, "cio_signing_key", None) or getattr(event, "sealed_signing_key", None):
        parts.append("cio_signature=required")  # never the key itself
    return "; ".join(parts)


def audit_entry(event: Any, position: int, subject: Subject | None) -> AuditEntry | None:
    """One audit entry per change; None for events that change nothing audited.
    `subject` is what was known of the aggregate before this event."""
    if not isinstance(event, AUDITED_EVENTS):  # most of a log (registrations): no entry
        if not isinstance(event.timestamp, datetime):
            iso(event.timestamp)  # raises, as it always did, for a time that is not one
        return None
    at = iso(event.timestamp)
    meta: dict[str, Any] = getattr(event, "meta", None) or {}
    subject = subject or Subject()
    common = {
        "position": position,
        "at": at,
        "event": event_name(event),
        "actor": meta.get("actor"),
        "token": meta.get("token"),
        "person_id": subject.person_id,
        "email": subject.email,
        "community_id": None,
        "previous_value": None,
        "new_value": None,
        "workflow": meta.get("workflow"),
        "idempotency_key": meta.get("idempotency_key"),
        "request_id": meta.get("request_id"),
        "source_address": meta.get("source_address"),
    }
    if isinstance(event, Person.MemberAdded):
        return AuditEntry(
            operation="add-member",
            **{**common, "community_id": event.community_id, "new_value": "member"},
        )
    if isinstance(event, Person.SignupCodeChanged):
        return AuditEntry(
            operation="set-code",
            **{**common, "previous_value": event.previous_code, "new_value": event.new_code},
        )
    if isinstance(event, Person.EmailChanged):
        return AuditEntry(
            operation="change-email",
            **{
                **common,
                "email": event.email,
                "previous_value": event.previous_email,
                "new_value": event.email,
            },
        )
    if isinstance(event, Token.Issued):
        return AuditEntry(
            operation="issue-token",
            **{**common, "token": event.name, "new_value": _token_summary(event)},
        )
    if isinstance(event, Token.Revoked):
        return AuditEntry(
            operation="revoke-token",
            **{
                **common,
                "token": subject.token,
                "previous_value": "active",
                "new_value": "revoked",
            },
        )
    if isinstance(event, Token.Rotated):
        return AuditEntry(
            operation="rotate-token",
            **{**common, "token": subject.token, "new_value": "new secret issued"},
        )
    return None


@dataclass
class PersonState:
    person_id: int
    email: str | None
    signup_code: str | None = None
    communities: set[int] = field(default_factory=set)


@dataclass
class Derived:
    """State and audit trail replayed from the log."""

    people: dict[int, PersonState] = field(default_factory=dict)
    communities: dict[int, str] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    subjects: dict[UUID, Subject] = field(default_factory=dict)
    community_ids: dict[UUID, int] = field(default_factory=dict)
    emails_had: set[tuple[str, int]] = field(default_factory=set)  # (normalised, person)
    position: int = 0
    undecodable: list[tuple[int, str]] = field(default_factory=list)

    def apply(self, event: Any, position: int) -> None:
        subject = self.subjects.get(event.originator_id)
        entry = audit_entry(event, position, subject)
        if entry is not None:
            self.audit.append(entry)
        changed = next_subject(event, subject)
        if changed is not None:
            self.subjects[event.originator_id] = changed
            if changed.person_id is not None and changed.email:
                self.emails_had.add((normalise_email(changed.email), changed.person_id))
        if isinstance(event, Person.Registered):
            self.people[event.person_id] = PersonState(event.person_id, event.email)
            return
        if isinstance(event, Community.Created):
            self.community_ids[event.originator_id] = event.community_id
            self.communities[event.community_id] = event.name
            return
        if isinstance(event, Community.Renamed):
            community_id = self.community_ids.get(event.originator_id)
            if community_id is not None:
                self.communities[community_id] = event.name
            return
        person = self.people.get(subject.person_id) if subject and subject.person_id else None
        if person is None:
            return
        if isinstance(event, Person.MemberAdded):
            person.communities.add(event.community_id)
        elif isinstance(event, Person.SignupCodeChanged):
            person.signup_code = event.new_code
        elif isinstance(event, Person.EmailChanged):
            person.email = event.email


def replay(
    app: Any,
    *,
    stop: int | None = None,
    until: datetime | None = None,
    batch: int = 5000,
) -> Derived:
    """Replay the log in order up to position `stop` (inclusive; default the head
    now) and/or up to the instant `until` (events recorded after it are left out)."""
    derived = Derived()
    head = app.recorder.max_notification_id() or 0
    derived.position = head if stop is None else min(stop, head)
    decode = app.mapper.to_domain_event
    topics = sorted(STATE_TOPICS | AUDIT_TOPICS)
    for note in notifications(app, stop=derived.position, batch=batch, topics=topics):
        try:
            event = decode(note)
        except Exception as error:  # a corrupted record must be reported, not crash
            derived.undecodable.append((note.id, f"{type(error).__name__}: {error}"))
            continue
        if until is not None and event.timestamp > until:
            continue
        try:
            derived.apply(event, note.id)
        except Exception as error:  # decodes, but lacks what its type must carry
            derived.undecodable.append((note.id, f"{type(error).__name__}: {error}"))
    return derived


def notifications(
    app: Any,
    *,
    start: int = 1,
    stop: int | None = None,
    batch: int = 5000,
    topics: Sequence[str] = (),
) -> Iterator[Any]:
    """Every notification (of `topics`, if given) from `start` to `stop` (inclusive;
    default the head now), in log order, read a window of `batch` positions at a
    time (see TableProjection.read for why a window, not a count), the next
    window while the caller works on this one (PostgreSQL)."""
    if stop is None:
        stop = app.recorder.max_notification_id() or 0
    windows = [(first, min(stop, first + batch - 1)) for first in range(start, stop + 1, batch)]

    def fetch(window: tuple[int, int]) -> Sequence[Any]:
        return read_log(app.recorder, window[0], window[1], topics)

    postgres = isinstance(app.recorder, PostgresApplicationRecorder)
    for notes in read_ahead(fetch, windows, thread=postgres):
        yield from notes
