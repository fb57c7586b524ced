"""Many aggregates read in one query and written in one statement: for the directory
import, and for the reads a request makes before its command is queued.

The library's repository reads one aggregate per query, and `Application.save` sends
events as one text-encoded composite array: an import of a million people spent its
time in round trips and in encoding. `read_stored` selects the events of several ids at
once from the recorder's own table, and `rebuild` makes an aggregate of them with the
library's mapper and each event's mutate(), as `repository.get` would. `latest_states`
selects, for several ids at once, only the state of each one's latest event of some
topics (the import asks for a person's email, not its memberships), and `decode_state`
reads such a state as the mapper would (the app's transcoder parses with orjson).
`write_aggregates` maps the pending events with the library's mapper and `write_events`
(or `prepared_write`, to write them later) writes rows of stored events: on PostgreSQL
it COPYs them in binary (the payload built here, in PostgreSQL's documented COPY BINARY
layout, without psycopg's per-value dispatch) inside the recorder's own transaction
shape: its table lock (so notification ids are issued in commit order) and its NOTIFY;
on SQLite it calls the recorder's `insert_events`. On PostgreSQL the read and the COPY
go through libpq directly (commands/libpq.py). What this takes from the library beyond
its documented API (its tables, its lock, its mapper's layout) comes from
commands/library_internals.py."""

import struct
from collections.abc import Callable, Collection, Iterable, Iterator
from functools import cache, partial
from itertools import groupby, islice
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore, Mapper, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.rows import tuple_row

from commands.libpq import copy_in_transaction, execute_prepared
from commands.library_internals import (
    INSERT_RETRY,
    connection,
    copy_events_statement,
    datastore_of,
    events_of_ids_statement,
    latest_states_statement,
    mapper_of,
    recorder_of,
    sqlite_events_of_ids_statement,
    sqlite_latest_states_statement,
    sqlite_read_id,
    sqlite_stored_id,
    transaction,
    transcoder_of,
    unseal,
)

CHUNK = 900  # SQLite allows at most 999 parameters per statement in older builds
# One stored event as written: originator id (its 16 bytes), version, topic, state.
EventRow = tuple[bytes, int, str, bytes]
# COPY BINARY: signature, flags, header extension length; then rows; then -1 fields.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
# A row's 4 fields (library_internals.EVENT_COLUMN_TYPES) up to the topic's bytes:
# uuid (16 bytes), int8 (8 bytes), topic length.
COPY_ROW_HEAD = struct.Struct(">hi16siqi")
COPY_LENGTH = struct.Struct(">i")


def read_stored(events: EventStore[UUID], ids: Collection[UUID]) -> dict[UUID, list[StoredEvent]]:
    """Each id's stored events in version order (none where it does not exist), in one
    query; `rebuild` turns them into the aggregate when, and only if, it is needed."""
    found: dict[UUID, list[StoredEvent]] = {aggregate_id: [] for aggregate_id in ids}
    for aggregate_id, its_events in groupby(
        _stored_events(recorder_of(events), list(found)), key=lambda e: e.originator_id
    ):
        found[aggregate_id] = list(its_events)
    return found


def rebuild(events: EventStore[UUID], stored: list[StoredEvent]) -> Aggregate | None:
    """The aggregate these events make, or None for no events. The library's
    project_aggregate, without its per-event isinstance check against a runtime
    Protocol: that check alone cost a quarter of a read."""
    aggregate = None
    for event in map(mapper_of(events).to_domain_event, stored):
        aggregate = event.mutate(aggregate)
    return aggregate


def latest_states(
    events: EventStore[UUID], ids: Collection[bytes], topics: list[str]
) -> dict[bytes, bytes]:
    """The state of each id's latest event of these topics, for those ids that have one.
    Ids are 16 bytes each, in and out: sent as hex text, which both stores read as a
    uuid, and returned as PostgreSQL's uuid_send bytes, so no UUID object is made."""
    recorder: Any = recorder_of(events)
    iterator = iter(ids)
    found: dict[bytes, bytes] = {}
    while chunk := list(islice(iterator, CHUNK)):
        if isinstance(recorder, PostgresAggregateRecorder):
            statement = latest_states_statement(recorder)
            with (
                connection(datastore_of(recorder)) as conn,
                conn.cursor(row_factory=tuple_row) as cursor,
            ):
                ids_text = "{" + ",".join([i.hex() for i in chunk]) + "}"
                cursor.execute(statement, (ids_text, topics), prepare=True)
                found.update(cursor.fetchall())
            continue
        statement_text = sqlite_latest_states_statement(recorder, len(chunk), len(topics))
        with transaction(datastore_of(recorder), commit=False) as cursor:
            cursor.execute(statement_text, [sqlite_stored_id(i) for i in chunk] + topics)
            for row in cursor.fetchall():  # in version order: the latest is kept
                found[sqlite_read_id(recorder, row[0]).bytes] = bytes(row[1])
    return found


def decode_state(mapper: Mapper[UUID], state: bytes) -> dict[str, Any]:
    """A stored event's attributes, as the mapper's to_domain_event decodes them."""
    return dict(transcoder_of(mapper).decode(unseal(mapper, state)))


def plain_state(mapper: Mapper[UUID], state: bytes) -> dict[str, Any]:
    """A stored event's attributes as plain JSON values: its typed values (timestamp,
    ids) are left as the transcoder wrote them. For a reader that needs only plain
    fields of an event, and not the event itself."""
    return dict(orjson.loads(unseal(mapper, state)))


def _stored_events(recorder: Any, ids: list[UUID]) -> Iterator[StoredEvent]:
    """Every event of these ids, grouped by id, in version order within each."""
    if not isinstance(recorder, PostgresAggregateRecorder):
        yield from _sqlite_stored_events(recorder, ids)
        return
    statement = events_of_ids_statement(recorder)
    iterator = iter(ids)
    while chunk := list(islice(iterator, CHUNK)):
        # The ids come back as their 16 bytes and are mapped to the UUIDs asked for.
        asked = {i.bytes: i for i in chunk}
        with connection(datastore_of(recorder)) as conn:
            result = execute_prepared(conn, statement, [_uuid_array(chunk)])
        value = result.get_value
        for row in range(result.ntuples):
            yield StoredEvent(
                asked[value(row, 0)],  # type: ignore[index]
                int.from_bytes(value(row, 1), signed=True),  # type: ignore[arg-type]
                _topic(value(row, 2)),  # type: ignore[arg-type]
                value(row, 3),  # type: ignore[arg-type]
            )


@cache
def _topic(name: bytes) -> str:
    return name.decode()


def _sqlite_stored_events(recorder: Any, ids: list[UUID]) -> Iterator[StoredEvent]:
    iterator = iter(ids)
    while chunk := list(islice(iterator, CHUNK)):
        statement = sqlite_events_of_ids_statement(recorder, len(chunk))
        with transaction(datastore_of(recorder), commit=False) as cursor:
            cursor.execute(statement, [sqlite_stored_id(i) for i in chunk])
            rows = cursor.fetchall()
        for row in rows:
            yield StoredEvent(
                originator_id=sqlite_read_id(recorder, row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )


def write_aggregates(app: Application[UUID], aggregates: Iterable[Aggregate]) -> None:
    """Every pending event of these aggregates, in one transaction; a version that is
    already stored raises the library's IntegrityError and writes nothing."""
    write_events(app, list(aggregate_events(app.mapper, aggregates)))


def aggregate_events(mapper: Mapper[UUID], aggregates: Iterable[Aggregate]) -> Iterator[EventRow]:
    """The pending events of these aggregates, mapped as the library's mapper maps them."""
    for aggregate in aggregates:
        for event in aggregate.collect_events():
            stored = mapper.to_stored_event(event)
            originator_id = stored.originator_id.bytes
            yield originator_id, stored.originator_version, stored.topic, stored.state


def write_events(app: Application[UUID], rows: list[EventRow]) -> None:
    """These stored events, in one transaction; a version that is already stored raises
    the library's IntegrityError and writes nothing."""
    prepared_write(app, rows)()


def prepared_write(app: Application[UUID], rows: list[EventRow]) -> Callable[[], None]:
    """`write_events` of these rows, with what can be done before the store is asked
    done now: the import hands the write to a thread of its own (commands/read_ahead.py
    WriteBehind), which then spends its time in the store, not in Python."""
    recorder: Any = app.recorder
    if not rows:
        return _nothing
    if not isinstance(recorder, PostgresApplicationRecorder):
        stored = [StoredEvent(UUID(bytes=i), v, t, s) for i, v, t, s in rows]
        return partial(recorder.insert_events, stored)
    return partial(_copy_events, recorder, _copy_payload(rows))


def _nothing() -> None:
    pass


def _copy_payload(rows: list[EventRow]) -> bytearray:
    """The rows in COPY BINARY format (built before the transaction takes its lock)."""
    payload = bytearray(COPY_SIGNATURE)
    head, length = COPY_ROW_HEAD.pack, COPY_LENGTH.pack
    topics: dict[str, bytes] = {}
    for originator_id, version, topic, state in rows:
        if (encoded := topics.get(topic)) is None:
            encoded = topics[topic] = topic.encode()
        payload += head(4, 16, originator_id, 8, version, len(encoded))
        payload += encoded
        payload += length(len(state))
        payload += state
    payload += COPY_TRAILER
    return payload


# Like the recorder's insert_events: a connection broken by a server restart is retried.
@retry(INSERT_RETRY.errors, max_attempts=INSERT_RETRY.attempts, wait=INSERT_RETRY.wait)
def _copy_events(recorder: PostgresApplicationRecorder, payload: bytearray) -> None:
    with connection(datastore_of(recorder)) as conn:
        # The recorder's own statements (lock timeout, LOCK ... IN EXCLUSIVE MODE so
        # notification ids follow commit order, NOTIFY), then the COPY, in one query.
        copy_in_transaction(conn, copy_events_statement(recorder), payload)


def _uuid_array(ids: list[UUID]) -> bytes:
    """The ids as an array literal, in PostgreSQL's text form."""
    return ("{" + ",".join(map(str, ids)) + "}").encode()
