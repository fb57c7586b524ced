"""The database projections: state, audit and the log's hash chain.

Each is written in the style of the library's full-text-search example: one
`singledispatchmethod` handler per event type, applied to the view inside the
transaction that also records the projection's position. A batch of events is
one transaction, so the rows and the position can never disagree.
"""

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.dispatch import singledispatchmethod

from aggregates import Community, Person, Token
from projections.model import (
    AUDIT_COLUMNS,
    AUDIT_TOPICS,
    STATE_TOPICS,
    Subject,
    audit_entry,
    iso,
    next_subject,
)
from projections.store import StalePosition, ViewsMixin

log = logging.getLogger("pm_ops.projections")

GENESIS = "0" * 64


class TableProjection:
    name = ""
    topics: frozenset[str] | None = None  # None: every event (the chain needs all)

    def __init__(self, app: Any, views: ViewsMixin) -> None:
        self.app = app
        self.views = views
        self.t = views.table

    # --- what subclasses define --------------------------------------------

    def ddl(self) -> list[str]:
        raise NotImplementedError

    def tables(self) -> list[str]:
        raise NotImplementedError

    @singledispatchmethod
    def apply(self, event: Any, cursor: Any, position: int) -> None:
        """Events a projection does not handle only move its position."""

    def apply_notification(self, note: Any, cursor: Any) -> None:
        if self.topics is not None and note.topic not in self.topics:
            return
        self.apply(self.app.mapper.to_domain_event(note), cursor, note.id)

    # --- machinery ------------------------------------------------------------

    def create(self) -> None:
        self.views.create_views(self.ddl())

    def position(self) -> int:
        return self.views.position(self.name)

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def process(self, notes: Sequence[Any], expected: int) -> None:
        """Apply a batch and record its last position, all in one transaction."""
        with self.views.write() as cursor:
            self.views.claim(cursor, self.name, expected)
            for note in notes:
                self.apply_notification(note, cursor)
            self.views.advance(cursor, self.name, notes[-1].id)

    def catch_up(
        self,
        *,
        batch: int = 500,
        max_batches: int | None = None,
        on_batch: Callable[[int], None] | None = None,
        head: int | None = None,
    ) -> int:
        """Process everything up to the head of the log; returns events processed."""
        done = 0
        head = self.head() if head is None else head
        position = self.position()
        batches = 0
        while position < head and (max_batches is None or batches < max_batches):
            notes = self.app.recorder.select_notifications(position + 1, batch, stop=head)
            if not notes:
                break
            try:
                self.process(notes, position)
            except StalePosition as stale:
                log.info("%s", stale)
                return done
            done += len(notes)
            batches += 1
            position = notes[-1].id
            if on_batch is not None:
                on_batch(position)
        return done

    def reset(self) -> None:
        self.views.reset(self.name, [f"DELETE FROM {table}" for table in self.tables()])

    def execute(self, cursor: Any, statement: str, params: Any = ()) -> None:
        self.views.execute(cursor, statement, params)


class StateProjection(TableProjection):
    """Who is in which community, and every person's current signup code."""

    name = "state"
    topics = STATE_TOPICS

    def tables(self) -> list[str]:
        return [
            self.t("ops_state_people"),
            self.t("ops_state_memberships"),
            self.t("ops_state_communities"),
        ]

    def ddl(self) -> list[str]:
        people, members, communities = self.tables()
        return [
            f"CREATE TABLE IF NOT EXISTS {people} ("
            "subject TEXT PRIMARY KEY, person_id BIGINT NOT NULL UNIQUE, email TEXT, "
            "signup_code TEXT, updated_at TEXT NOT NULL, position BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {members} ("
            "person_id BIGINT NOT NULL, community_id BIGINT NOT NULL, "
            "added_at TEXT NOT NULL, position BIGINT NOT NULL, "
            "PRIMARY KEY (person_id, community_id))",
            f"CREATE INDEX IF NOT EXISTS ops_state_memberships_community "
            f"ON {members} (community_id)",
            f"CREATE TABLE IF NOT EXISTS {communities} ("
            "subject TEXT PRIMARY KEY, community_id BIGINT NOT NULL UNIQUE, name TEXT)",
        ]

    @singledispatchmethod
    def apply(self, event: Any, cursor: Any, position: int) -> None:
        pass

    @apply.register
    def _registered(self, event: Person.Registered, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"INSERT INTO {self.t('ops_state_people')} "
            "(subject, person_id, email, signup_code, updated_at, position) "
            "VALUES (%s, %s, %s, NULL, %s, %s) ON CONFLICT (subject) DO NOTHING",
            (
                str(event.originator_id),
                event.person_id,
                event.email,
                iso(event.timestamp),
                position,
            ),
        )

    @apply.register
    def _email_changed(self, event: Person.EmailChanged, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"UPDATE {self.t('ops_state_people')} SET email=%s, updated_at=%s, position=%s "
            "WHERE subject=%s",
            (event.email, iso(event.timestamp), position, str(event.originator_id)),
        )

    @apply.register
    def _code_changed(self, event: Person.SignupCodeChanged, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"UPDATE {self.t('ops_state_people')} SET signup_code=%s, updated_at=%s, position=%s "
            "WHERE subject=%s",
            (event.new_code, iso(event.timestamp), position, str(event.originator_id)),
        )

    @apply.register
    def _member_added(self, event: Person.MemberAdded, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"INSERT INTO {self.t('ops_state_memberships')} "
            "(person_id, community_id, added_at, position) "
            f"SELECT person_id, %s, %s, %s FROM {self.t('ops_state_people')} WHERE subject=%s "
            "ON CONFLICT (person_id, community_id) DO NOTHING",
            (event.community_id, iso(event.timestamp), position, str(event.originator_id)),
        )

    @apply.register
    def _community_created(self, event: Community.Created, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"INSERT INTO {self.t('ops_state_communities')} (subject, community_id, name) "
            "VALUES (%s, %s, %s) ON CONFLICT (subject) DO NOTHING",
            (str(event.originator_id), event.community_id, event.name),
        )

    @apply.register
    def _community_renamed(self, event: Community.Renamed, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"UPDATE {self.t('ops_state_communities')} SET name=%s WHERE subject=%s",
            (event.name, str(event.originator_id)),
        )


class AuditProjection(TableProjection):
    """One entry per change, keyed by its log position (so a replay adds nothing)."""

    name = "audit"
    topics = AUDIT_TOPICS

    def tables(self) -> list[str]:
        return [self.t("ops_audit"), self.t("ops_audit_subjects")]

    def ddl(self) -> list[str]:
        audit, subjects = self.tables()
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
        ]

    @singledispatchmethod
    def apply(self, event: Any, cursor: Any, position: int) -> None:
        pass

    @apply.register
    def _person_event(
        self,
        event: Person.Registered | Person.EmailChanged | Person.MemberAdded,
        cursor: Any,
        position: int,
    ) -> None:
        self._record(event, cursor, position)

    @apply.register
    def _code_changed(self, event: Person.SignupCodeChanged, cursor: Any, position: int) -> None:
        self._record(event, cursor, position)

    @apply.register
    def _token_event(
        self, event: Token.Issued | Token.Revoked | Token.Rotated, cursor: Any, position: int
    ) -> None:
        self._record(event, cursor, position)

    def _record(self, event: Any, cursor: Any, position: int) -> None:
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
        if changed is not None:
            self.execute(
                cursor,
                f"INSERT INTO {subjects} (subject, person_id, email, token) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (subject) DO UPDATE SET person_id=excluded.person_id, "
                "email=excluded.email, token=excluded.token",
                (key, changed.person_id, changed.email, changed.token),
            )


def content_hash(note: Any) -> str:
    """A digest of one stored event: its position, identity, topic and content."""
    digest = hashlib.sha256(
        f"{note.id}\n{note.originator_id}\n{note.originator_version}\n{note.topic}\n".encode()
    )
    state = note.state
    digest.update(state.encode() if isinstance(state, str) else bytes(state))
    return digest.hexdigest()


def chain_hash(previous: str, content: str) -> str:
    return hashlib.sha256(f"{previous}{content}".encode()).hexdigest()


class ChainProjection(TableProjection):
    """A hash chain over the log: each event's position and content, linked to the
    previous hash. `verify` recomputes it from the log; an event edited, deleted or
    reordered in SQL after it was chained is reported with its position."""

    name = "chain"
    topics = None

    def tables(self) -> list[str]:
        return [self.t("ops_chain")]

    def ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.t('ops_chain')} ("
            "position BIGINT PRIMARY KEY, content_hash TEXT NOT NULL, chain_hash TEXT NOT NULL)"
        ]

    def process(self, notes: Sequence[Any], expected: int) -> None:
        table = self.t("ops_chain")
        with self.views.write() as cursor:
            self.views.claim(cursor, self.name, expected)
            self.execute(cursor, f"SELECT chain_hash FROM {table} ORDER BY position DESC LIMIT 1")
            row = cursor.fetchone()
            previous = row["chain_hash"] if row else GENESIS
            rows = []
            for note in notes:
                content = content_hash(note)
                previous = chain_hash(previous, content)
                rows.append((note.id, content, previous))
            cursor.executemany(
                self.views.sql(
                    f"INSERT INTO {table} (position, content_hash, chain_hash) "
                    "VALUES (%s, %s, %s) ON CONFLICT (position) DO NOTHING"
                ),
                rows,
            )
            self.views.advance(cursor, self.name, notes[-1].id)


DB_PROJECTIONS: dict[str, type[TableProjection]] = {
    "state": StateProjection,
    "audit": AuditProjection,
    "chain": ChainProjection,
}
