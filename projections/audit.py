"""The audit read model: one entry per change, who made it and why. Its tables,
its writes and its queries, and the same derivation in plain Python (`AuditModel`,
for `verify`).

What each event means to the trail is one small function in ENTRIES (the entry's
own columns) and in SUBJECTS (who the aggregate is about from then on); an
operation's event is recorded as its declaration's `audit` says
(commands/operations.py).

Entries are keyed by their log position, so a replay adds nothing and the
position is the natural cursor: `AuditView.search(filters, after, limit)` pages
by it (keyset pagination, for a web page), `AuditView.entries(filters)` walks
the whole filtered trail (for CSV/JSON export).

Version 2 added `ops_audit_emails` (every address a person ever had, normalised)
so a search by email is one indexed lookup instead of a scan of every person.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from aggregates import Community, Delivery, EmailIndex, Person, RejectedCall, Token, normalise_email
from commands.operations import OPERATIONS, AuditRecord, Operation
from projections.handled import check_handled, require_attributes
from projections.projection import TableProjection
from projections.store import ViewsMixin
from projections.times import iso

__all__ = ["AuditEntry", "AuditFilters", "AuditProjection", "AuditView"]

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
META_COLUMNS = ("actor", "token", "workflow", "idempotency_key", "request_id", "source_address")


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


@dataclass(frozen=True)
class Subject:
    """Who an aggregate's events are about: a person (id and email at the time) or a token."""

    person_id: int | None = None
    email: str | None = None
    token: str | None = None


# --- what each event means to the trail -------------------------------------------

Columns = dict[str, Any]  # an entry's own columns; the rest come from the event's meta


def _email_changed(event: Any, subject: Subject) -> Columns:
    return {
        "operation": "change-email",
        "email": event.email,
        "previous_value": event.previous_email,
        "new_value": event.email,
    }


def _token_issued(event: Any, subject: Subject) -> Columns:
    parts = [f"actor={event.actor}", "scopes=" + ",".join(event.scopes)]
    if event.allow_cidrs:
        parts.append("allow=" + ",".join(event.allow_cidrs))
    if event.rate_limit:
        parts.append(f"rate_limit={event.rate_limit}/min")
    if getattr(event, "cio_signing_key", None) or getattr(event, "sealed_signing_key", None):
        parts.append("cio_signature=required")  # never the key itself
    return {"operation": "issue-token", "token": event.name, "new_value": "; ".join(parts)}


def _token_revoked(event: Any, subject: Subject) -> Columns:
    return {
        "operation": "revoke-token",
        "token": subject.token,
        "previous_value": "active",
        "new_value": "revoked",
    }


def _token_rotated(event: Any, subject: Subject) -> Columns:
    return {"operation": "rotate-token", "token": subject.token, "new_value": "new secret issued"}


def declared(op: Operation) -> Callable[[Any, Subject], Columns]:
    """How an operation's event is recorded, as its declaration says."""
    record = op.audit

    def columns(event: Any, subject: Subject) -> Columns:
        read = {
            name: getattr(event, attribute)
            for name in ("community_id", "previous_value", "new_value")
            if (attribute := getattr(record, name)) is not None
        }
        if record.fixed_new_value is not None:
            read["new_value"] = record.fixed_new_value
        return {"operation": op.name, **read}

    return columns


ENTRIES: dict[type, Callable[[Any, Subject], Columns]] = {
    Person.EmailChanged: _email_changed,
    Token.Issued: _token_issued,
    Token.Revoked: _token_revoked,
    Token.Rotated: _token_rotated,
    **{op.event: declared(op) for op in OPERATIONS},
}
SUBJECTS: dict[type, Callable[[Any, Subject], Subject]] = {
    Person.Registered: lambda event, _: Subject(person_id=event.person_id, email=event.email),
    Person.EmailChanged: lambda event, was: Subject(person_id=was.person_id, email=event.email),
    Token.Issued: lambda event, _: Subject(token=event.name),
}
LEAVES_ALONE = (Community, Delivery, EmailIndex, RejectedCall)
TOPICS = frozenset(get_topic(event) for event in (*ENTRIES, *SUBJECTS))
# How a page says each kind of entry, formatted with the entry's columns.
WORDS: dict[str, str] = {
    **{op.name: op.audit.words for op in OPERATIONS},
    "change-email": "{previous_value} → {new_value}",
    "issue-token": "{new_value}",
    "revoke-token": "{new_value}",
    "rotate-token": "{new_value}",
}
OPERATION_NAMES = tuple(WORDS)  # every kind of entry, for filters


def check() -> None:
    """At start-up: every event is handled or left alone; declarations name real attributes."""
    check_handled("audit", {*ENTRIES, *SUBJECTS}, LEAVES_ALONE)
    for op in OPERATIONS:
        record: AuditRecord = op.audit
        names = (record.community_id, record.previous_value, record.new_value)
        require_attributes("audit", op.event, names)


def audit_entry(event: Any, position: int, subject: Subject | None) -> AuditEntry | None:
    """The entry an event makes (None: it changes nothing audited). `subject` is what
    was known of the aggregate before this event."""
    columns = ENTRIES.get(type(event))
    at = iso(event.timestamp)  # every event of the trail's topics has a time, or is corrupt
    if columns is None:
        return None
    subject = subject or Subject()
    meta: dict[str, Any] = getattr(event, "meta", None) or {}
    entry: Columns = {
        "position": position,
        "at": at,
        "event": type(event).__name__,
        "person_id": subject.person_id,
        "email": subject.email,
        "community_id": None,
        "previous_value": None,
        "new_value": None,
        **{name: meta.get(name) for name in META_COLUMNS},
    }
    return AuditEntry(**{**entry, **columns(event, subject)})


def next_subject(event: Any, subject: Subject | None) -> Subject | None:
    """The subject after this event, if the event introduces or changes it."""
    follows = SUBJECTS.get(type(event))
    return None if follows is None else follows(event, subject or Subject())


def describe(entry: Mapping[str, Any]) -> str:
    """An entry's change in words, as a page shows it ("joined community 42", "A → B")."""
    values = {name: "—" if value in (None, "") else value for name, value in entry.items()}
    return WORDS.get(entry["operation"], "{new_value}").format_map(values)


@dataclass
class AuditModel:
    """The trail derived event by event, in plain Python (not the projection's SQL)."""

    topics: frozenset[str] = TOPICS
    entries: list[AuditEntry] = field(default_factory=list)
    subjects: dict[UUID, Subject] = field(default_factory=dict)
    emails_had: set[tuple[str, int]] = field(default_factory=set)  # (normalised, person)

    def apply(self, position: int, event: Any) -> None:
        subject = self.subjects.get(event.originator_id)
        entry = audit_entry(event, position, subject)
        if entry is not None:
            self.entries.append(entry)
        after = next_subject(event, subject)
        if after is not None:
            self.subjects[event.originator_id] = after
            if after.person_id is not None and after.email:
                self.emails_had.add((normalise_email(after.email), after.person_id))


# --- the projection: its tables and its writes --------------------------------------


class AuditProjection(TableProjection):
    name = "audit"
    version = 2
    topics = TOPICS
    table_names = ("ops_audit", "ops_audit_subjects", "ops_audit_emails")

    def check(self) -> None:
        check()

    def ddl(self) -> list[str]:
        audit, subjects, emails = self.tables()
        return [
            f"CREATE TABLE IF NOT EXISTS {audit} ("
            "position BIGINT PRIMARY KEY, at TEXT NOT NULL, operation TEXT NOT NULL, "
            "event TEXT NOT NULL, actor TEXT, token TEXT, person_id BIGINT, email TEXT, "
            "community_id BIGINT, previous_value TEXT, new_value TEXT, workflow TEXT, "
            "idempotency_key TEXT, request_id TEXT, source_address TEXT)",
            f"CREATE INDEX IF NOT EXISTS {self.index('ops_audit_person', 'ops_audit')} "
            f"ON {audit} (person_id)",
            f"CREATE INDEX IF NOT EXISTS {self.index('ops_audit_at', 'ops_audit')} ON {audit} (at)",
            f"CREATE TABLE IF NOT EXISTS {subjects} ("
            "subject TEXT PRIMARY KEY, person_id BIGINT, email TEXT, token TEXT)",
            f"CREATE TABLE IF NOT EXISTS {emails} ("
            "email TEXT NOT NULL, person_id BIGINT NOT NULL, PRIMARY KEY (email, person_id))",
        ]

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        """Entries are made in Python from each event and who its aggregate was about
        just before it (the batch's subjects are read once, then carried forward);
        then the entries, each subject as the batch left it and the addresses seen
        are written, a statement each."""
        subjects = self._subjects(cursor, {str(event.originator_id) for _, event in events})
        entries: list[tuple[Any, ...]] = []
        changed: dict[str, tuple[Any, ...]] = {}
        emails: dict[tuple[str, int], None] = {}  # an ordered set
        for position, event in events:
            key = str(event.originator_id)
            subject = subjects.get(key)
            entry = audit_entry(event, position, subject)
            if entry is not None:
                entries.append(entry.row())
            after = next_subject(event, subject)
            if after is None:
                continue
            subjects[key] = after
            changed[key] = (key, after.person_id, after.email, after.token)
            if after.person_id is not None and after.email:
                emails[(normalise_email(after.email), after.person_id)] = None
        self._write(cursor, entries, list(changed.values()), list(emails))

    def _subjects(self, cursor: Any, keys: set[str]) -> dict[str, Subject]:
        """Who each of these aggregates is about, as the table has it now."""
        table, found = self.t("ops_audit_subjects"), {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), SUBJECTS_PER_QUERY):
            chunk = ordered[start : start + SUBJECTS_PER_QUERY]
            if self.views.is_postgres:
                where, params = "subject = ANY(%b)", [chunk]
            else:
                where, params = f"subject IN ({', '.join(['?'] * len(chunk))})", chunk
            cursor.execute(
                f"SELECT subject, person_id, email, token FROM {table} WHERE {where}", params
            )
            for row in cursor.fetchall():
                found[row["subject"]] = Subject(row["person_id"], row["email"], row["token"])
        return found

    def _write(
        self,
        cursor: Any,
        entries: list[tuple[Any, ...]],
        subjects: list[tuple[Any, ...]],
        emails: list[tuple[str, int]],
    ) -> None:
        audit, table, had = self.tables()
        self.views.execute_rows(
            cursor,
            f"INSERT INTO {audit} ({', '.join(AUDIT_COLUMNS)}) "
            f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {{rows}} "
            "WHERE true ON CONFLICT (position) DO NOTHING",
            AUDIT_TYPES,
            entries,
        )
        self.views.execute_rows(
            cursor,
            f"INSERT INTO {table} (subject, person_id, email, token) "
            "SELECT subject, person_id, email, token FROM {rows} "
            "WHERE true ON CONFLICT (subject) DO UPDATE SET person_id=excluded.person_id, "
            "email=excluded.email, token=excluded.token",
            SUBJECT_TYPES,
            subjects,
        )
        self.views.execute_rows(
            cursor,
            f"INSERT INTO {had} (email, person_id) SELECT email, person_id FROM {{rows}} "
            "WHERE true ON CONFLICT (email, person_id) DO NOTHING",
            (("email", "text"), ("person_id", "bigint")),
            emails,
        )


SUBJECTS_PER_QUERY = 500  # SQLite binds at most 32,766 parameters a statement
AUDIT_TYPES = tuple(
    (column, "bigint" if column in ("position", "person_id", "community_id") else "text")
    for column in AUDIT_COLUMNS
)
SUBJECT_TYPES = (
    ("subject", "text"),
    ("person_id", "bigint"),
    ("email", "text"),
    ("token", "text"),
)


@dataclass(frozen=True)
class AuditFilters:
    """Every filter is optional; given ones must all match. `email` finds everyone
    who ever had the address; `actor` and `workflow` ignore case (people type them)."""

    person: int | None = None
    email: str | None = None
    community: int | None = None
    actor: str | None = None
    token: str | None = None
    workflow: str | None = None
    operation: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # inclusive


class AuditView:
    def __init__(self, views: ViewsMixin) -> None:
        self.views = views
        self.t = views.table

    def position(self) -> int:
        return self.views.position(AuditProjection.name)

    def search(
        self,
        filters: AuditFilters,
        after: int | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
        stop: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        """Up to `limit` entries after position `after` and/or before `before` (the
        keyset of the previous page; never OFFSET), up to position `stop`, in log
        order or newest first."""
        where, params = self._where(filters)
        for clause, value in (("position > %s", after), ("position < %s", before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if stop is not None:
            where.append("position <= %s")
            params.append(stop)
        statement = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {self.t('ops_audit')}"
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += f" ORDER BY position {'DESC' if newest_first else 'ASC'} LIMIT %s"
        with self.views.read() as cursor:
            self.views.execute(cursor, statement, [*params, limit])
            return [AuditEntry(**{c: r[c] for c in AUDIT_COLUMNS}) for r in cursor.fetchall()]

    def entries(
        self, filters: AuditFilters, batch: int = 1000, stop: int | None = None
    ) -> Iterator[AuditEntry]:
        """Every matching entry in log order (up to position `stop`), a page at a time."""
        after: int | None = None
        while True:
            page = self.search(filters, after, batch, stop=stop)
            yield from page
            if len(page) < batch:
                return
            after = page[-1].position

    def emails_had(self) -> set[tuple[str, int]]:
        """(normalised email, person id) for every address anyone ever had."""
        with self.views.read() as cursor:
            self.views.execute(cursor, f"SELECT email, person_id FROM {self.t('ops_audit_emails')}")
            return {(r["email"], r["person_id"]) for r in cursor.fetchall()}

    def _where(self, filters: AuditFilters) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("person_id", filters.person),
            ("community_id", filters.community),
            ("token", filters.token),
            ("operation", filters.operation),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        for column, value in (("actor", filters.actor), ("workflow", filters.workflow)):
            if value is not None:  # typed by people: "customer.io" means Customer.io
                where.append(f"LOWER({column}) = LOWER(%s)")
                params.append(value)
        if filters.email is not None:
            where.append(
                f"person_id IN (SELECT person_id FROM {self.t('ops_audit_emails')} "
                "WHERE email = %s)"
            )
            params.append(normalise_email(filters.email))
        if filters.since is not None:
            where.append("at >= %s")
            params.append(iso(filters.since))
        if filters.until is not None:
            where.append("at <= %s")
            params.append(iso(filters.until))
        return where, params
