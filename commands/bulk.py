"""Many aggregates read in one query and written in one statement: for the directory
import, and for the reads a request makes before its command is queued.

The library's repository reads one aggregate per query, and `Application.save` sends
events as one text-encoded composite array: an import of a million people spent its
time in round trips and in encoding. `read_stored` selects the events of several ids at
once from the recorder's own table, and `rebuild` makes an aggregate of them with the
library's mapper and each event's mutate(), as `repository.get` would. `write_aggregates`
maps the pending events with the library's mapper and, on PostgreSQL, COPYs them in binary
inside the recorder's own transaction shape: its table lock (so notification ids are
issued in commit order) and its NOTIFY; on SQLite it calls the recorder's `insert_events`."""

from collections.abc import Collection, Iterable, Iterator
from functools import cache
from itertools import groupby, islice
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore, InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

CHUNK = 900  # SQLite allows at most 999 parameters per statement in older builds
COLUMNS = "originator_id, originator_version, topic, state"


def read_stored(events: EventStore[UUID], ids: Collection[UUID]) -> dict[UUID, list[StoredEvent]]:
    """Each id's stored events in version order (none where it does not exist), in one
    query; `rebuild` turns them into the aggregate when, and only if, it is needed."""
    found: dict[UUID, list[StoredEvent]] = {aggregate_id: [] for aggregate_id in ids}
    for aggregate_id, its_events in groupby(
        _stored_events(events.recorder, list(found)), key=lambda e: e.originator_id
    ):
        found[aggregate_id] = list(its_events)
    return found


def rebuild(events: EventStore[UUID], stored: list[StoredEvent]) -> Aggregate | None:
    """The aggregate these events make, or None for no events. The library's
    project_aggregate, without its per-event isinstance check against a runtime
    Protocol: that check alone cost a quarter of a read."""
    aggregate = None
    for event in map(events.mapper.to_domain_event, stored):
        aggregate = event.mutate(aggregate)
    return aggregate


def _stored_events(recorder: Any, ids: list[UUID]) -> Iterator[StoredEvent]:
    """Every event of these ids, grouped by id, in version order within each."""
    if not isinstance(recorder, PostgresAggregateRecorder):
        yield from _sqlite_stored_events(recorder, ids)
        return
    statement = _select_any(recorder.datastore.schema, recorder.events_table_name)
    iterator = iter(ids)
    while chunk := list(islice(iterator, CHUNK)):
        # The ids come back as text and are mapped to the UUIDs asked for: psycopg would
        # otherwise build a UUID from text for every row.
        asked = {str(i): i for i in chunk}
        with (
            recorder.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(statement, (_uuid_array(chunk),), prepare=True)
            rows = cursor.fetchall()
        for originator_id, version, topic, state in rows:
            yield StoredEvent(asked[originator_id], version, topic, state)


def _sqlite_stored_events(recorder: Any, ids: list[UUID]) -> Iterator[StoredEvent]:
    iterator = iter(ids)
    while chunk := list(islice(iterator, CHUNK)):
        marks = ",".join("?" * len(chunk))
        statement = (
            f"SELECT {COLUMNS} FROM {recorder.events_table_name} "
            f"WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version"
        )
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [i.hex for i in chunk])
            rows = cursor.fetchall()
        for row in rows:
            yield StoredEvent(
                originator_id=recorder.convert_originator_id(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )


def write_aggregates(app: Application[UUID], aggregates: Iterable[Aggregate]) -> None:
    """Every pending event of these aggregates, in one transaction; a version that is
    already stored raises the library's IntegrityError and writes nothing."""
    stored = [
        app.mapper.to_stored_event(event)
        for aggregate in aggregates
        for event in aggregate.collect_events()
    ]
    recorder: Any = app.recorder
    if not stored:
        return
    if not isinstance(recorder, PostgresApplicationRecorder):
        recorder.insert_events(stored)
        return
    _copy_events(recorder, stored)


# Like the recorder's insert_events: a connection broken by a server restart is retried.
@retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
def _copy_events(recorder: PostgresApplicationRecorder, stored: list[StoredEvent]) -> None:
    with (
        recorder.datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor() as cursor,
    ):
        # The recorder's own statements (lock timeout, LOCK ... IN EXCLUSIVE MODE so
        # notification ids follow commit order, NOTIFY), sent in one round trip.
        cursor.execute(_lock_and_notify(recorder))
        with cursor.copy(_copy(recorder.datastore.schema, recorder.events_table_name)) as rows:
            rows.set_types(["uuid", "int8", "text", "bytea"])
            for event in stored:
                rows.write_row(
                    (event.originator_id, event.originator_version, event.topic, event.state)
                )


# Statements are composed once and kept as bytes: psycopg renders a Composed query
# again on every execute, which cost a tenth of a save and a tenth of a replay.
@cache  # one recorder per application
def _lock_and_notify(recorder: PostgresApplicationRecorder) -> bytes:
    notify = SQL("NOTIFY {}").format(Identifier(recorder.channel_name))
    return SQL("; ").join([*recorder.lock_table_statements, notify]).as_bytes(None)


@cache
def _copy(schema: str, table: str) -> bytes:
    return (
        SQL("COPY {}.{} (" + COLUMNS + ") FROM STDIN (FORMAT BINARY)")
        .format(Identifier(schema), Identifier(table))
        .as_bytes(None)
    )


@cache
def _select_any(schema: str, table: str) -> bytes:
    return (
        SQL(
            "SELECT originator_id::text, originator_version, topic, state FROM {}.{} "
            "WHERE originator_id = ANY(%s::uuid[]) ORDER BY originator_id, originator_version"
        )
        .format(Identifier(schema), Identifier(table))
        .as_bytes(None)
    )


def _uuid_array(ids: list[UUID]) -> str:
    """The ids as an array literal: psycopg's list dumper inspects every element to
    choose a type, which cost more than the query's own round trip."""
    return "{" + ",".join(map(str, ids)) + "}"
