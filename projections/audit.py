"""The audit read model: one entry per change, who made it and why. Its tables,
its writes and its queries.

Entries are keyed by their log position, so a replay adds nothing and the
position is the natural cursor: `AuditView.search(filters, after, limit)` pages
by it (keyset pagination, for a web page), `AuditView.entries(filters)` walks
the whole filtered trail (for CSV/JSON export).

Version 2 added `ops_audit_emails` (every address a person ever had, normalised)
so a search by email is one indexed lookup instead of a scan of every person.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.dispatch import singledispatchmethod

from aggregates import Person, Token, normalise_email
from projections.model import (
    AUDIT_COLUMNS,
    AUDIT_TOPICS,
    AuditEntry,
    Subject,
    audit_entry,
    iso,
    next_subject,
)
from projections.projection import TableProjection
from projections.store import ViewsMixin

__all__ = ["AuditEntry", "AuditFilters", "AuditProjection", "AuditView"]


class AuditProjection(TableProjection):
    name = "audit"
    version = 2
    topics = AUDIT_TOPICS

    def tables(self) -> list[str]:
        return [self.t("ops_audit"), self.t("ops_audit_subjects"), self.t("ops_audit_emails")]

    def ddl(self) -> list[str]:
        audit, subjects, emails = self.tables()
        return [
            f"CREATE TABLE IF NOT EXISTS {audit} ("
            "position BIGINT PRIMARY KEY, at TEXT NOT NULL, operation TEXT NOT NULL, "
            "event TEXT NOT NULL, actor TEXT, token TEXT, person_id BIGINT, email TEXT, "
            "community_id BIGINT, previous_value TEXT, new_value TEXT, workflow TEXT, "
            "idempotency_key TEXT, request_id TEXT, source_address TEXT)",
            f"CREATE INDEX IF NOT EXISTS ops_audit_person ON {audit} (person_id)",
            f"CREATE INDEX IF NOT EXISTS ops_audit_at ON {audit} (at)",
            f"CREATE TABLE IF NOT EXISTS {subjects} ("
            "subject TEXT PRIMARY KEY, person_id BIGINT, email TEXT, token TEXT)",
            f"CREATE TABLE IF NOT EXISTS {emails} ("
            "email TEXT NOT NULL, person_id BIGINT NOT NULL, PRIMARY KEY (email, person_id))",
        ]

    @singledispatchmethod
    def apply(self, event: Any, cursor: Any, position: int) -> None:
        pass

    @apply.register
    def _identity(
        self, event: Person.Registered | Person.EmailChanged, cursor: Any, position: int
    ) -> None:
        subject = self._record(event, cursor, position)
        if event.email and subject is not None and subject.person_id is not None:
            self.execute(
                cursor,
                f"INSERT INTO {self.t('ops_audit_emails')} (email, person_id) VALUES (%s, %s) "
                "ON CONFLICT (email, person_id) DO NOTHING",
                (normalise_email(event.email), subject.person_id),
            )

    @apply.register
    def _member_added(self, event: Person.MemberAdded, cursor: Any, position: int) -> None:
        self._record(event, cursor, position)

    @apply.register
    def _code_changed(self, event: Person.SignupCodeChanged, cursor: Any, position: int) -> None:
        self._record(event, cursor, position)

    @apply.register
    def _token_event(
        self, event: Token.Issued | Token.Revoked | Token.Rotated, cursor: Any, position: int
    ) -> None:
        self._record(event, cursor, position)

    def _record(self, event: Any, cursor: Any, position: int) -> Subject | None:
        """Write the entry (if the event is a change) and keep who the aggregate is
        about; returns the subject as it is after this event."""
        subjects = self.t("ops_audit_subjects")
        key = str(event.originator_id)
        self.execute(
            cursor, f"SELECT person_id, email, token FROM {subjects} WHERE subject=%s", (key,)
        )
        row = cursor.fetchone()
        subject = Subject(row["person_id"], row["email"], row["token"]) if row else None
        entry = audit_entry(event, position, subject)
        if entry is not None:
            placeholders = ", ".join(["%s"] * len(AUDIT_COLUMNS))
            self.execute(
                cursor,
                f"INSERT INTO {self.t('ops_audit')} ({', '.join(AUDIT_COLUMNS)}) "
                f"VALUES ({placeholders}) ON CONFLICT (position) DO NOTHING",
                entry.row(),
            )
        changed = next_subject(event, subject)
        if changed is None:
            return subject
        self.execute(
            cursor,
            f"INSERT INTO {subjects} (subject, person_id, email, token) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (subject) DO UPDATE SET person_id=excluded.person_id, "
            "email=excluded.email, token=excluded.token",
            (key, changed.person_id, changed.email, changed.token),
        )
        return changed


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
