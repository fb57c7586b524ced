"""Everything we take from eventsourcing 9.5.6 beyond its documented API, in one place.

Documented here means shown in the library's narrative docs or in its API reference
(public names with docstrings, constructor signatures), plus the application's
`repository`, `mapper`, `recorder` and `events`. The write path's speed, the circuit and
the projections need more than that; each such need is one name below, and the rest of
the code calls these names, never the internals. tests/test_library_contract.py checks
every one against the pinned library (on SQLite and PostgreSQL where it matters) and
names the internal that moved; README "Upgrading eventsourcing" says what to do then.

The internals, one a line: what of the library — what we use it for (our names for it).

Recorders and datastores
- Recorder.datastore — one pool for the log, views, rate limits and console (`datastore_of`)
- PostgresDatastore.get_connection() — a pooled autocommit connection, dict rows, the library's errors (`connection`)
- SQLiteDatastore.get_connection(commit=) — a pooled connection whose sqlite3 errors come through as they are (`sqlite_connection`)
- SQLiteDatastore/PostgresDatastore.transaction(commit=) — the views' transactions, rows by column name (`transaction`)
- the events table (PostgresDatastore.schema, events_table_name, its columns) — bulk reads, the COPY, read_log (`events_table`, `EVENT_COLUMNS`, `EVENT_COLUMN_TYPES`, `events_of_ids_statement`, `sqlite_events_of_ids_statement`, `latest_states_statement`, `sqlite_latest_states_statement`, `notifications_statement`, `content_digests_statement`, `event_positions`)
- SQLite's originator_id as UUID.hex, SQLiteRecorder.convert_originator_id — SQLite's bulk reads (`sqlite_stored_id`, `sqlite_read_id`)
- PostgresApplicationRecorder.lock_table_statements — our COPY takes the recorder's lock, so ids follow commit order (`lock_statements`, `copy_events_statement`)
- PostgresApplicationRecorder.channel_name (PostgresFactory's `<name>_events`) — the COPY's NOTIFY, the runners' LISTEN (`notify_channel`, `application_notify_channel`)
- PostgresApplicationRecorder.insert_events' retry (10 attempts on InterfaceError/OperationalError) — our COPY retries alike (`INSERT_RETRY`)

The circuit (commands/circuit.py)
- PostgresDatastore.get_connection, looked up at every call — the circuit's Checkout replaces it (`install_connection_checkout`)
- PostgresDatastore.pool, .pool_open_timeout, .psycopg_type_adapters — Checkout does what get_connection does (`connection_pool`, `pooled_connection`, `return_connection`)
- PostgresDatastore.get_connection's error translation — Checkout raises the same errors (`DATASTORE_ERRORS`, `persistence_error`)

Tracking (projections/store.py)
- TrackingRecorder._insert_tracking(cursor, tracking) — a position written in its rows' transaction (`insert_tracking`)
- the tracking table (its name, application_name, notification_id, a row per name) — positions, claims, resets (`tracking_table`, `tracking_statements`)

Mapping and transcoding
- Repository.event_store, EventStore.mapper/.recorder, Mapper.transcoder/.compressor/.cipher — bulk reads, the import (`event_store_of`, `mapper_of`, `recorder_of`, `transcoder_of`, `is_sealed`)
- Mapper.to_stored_event's state layout (the attributes as one JSON object, compressed, then encrypted) — replays' plain reads, the import's templates (`seal`, `unseal`)
- Mapper.to_domain_event on StoredEvent-like rows (a text originator_id made a UUID) — read_log's light rows (`note_decoder`)
- JSONTranscoder._decode_obj and its {"_type_", "_data_"} values — the orjson decoder revives them (`typed_value_decoder`, `TYPE_KEY`, `DATA_KEY`, `TYPE_KEY_JSON`)
- JSONTranscoder's compact, unescaped encoding (orjson.dumps' bytes) — the orjson decoder's one-comparison check, and the orjson encoder writing the same bytes (commands/transcoder.py)
- JSONTranscoder.types and _encode_obj's {"_type_": name, "_data_": encode(value)} — the orjson encoder writes a registered type's value so (`transcoding_of`)
- DatetimeAsISO (a timestamp stored as isoformat) — the import's event templates (`encoded_timestamp`)
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    JSONTranscoder,
    Mapper,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    Tracking,
    Transcoding,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresTrackingRecorder,
)
from psycopg.abc import Query
from psycopg.sql import SQL, Identifier
from psycopg.types.composite import register_composite

GetConnection = Callable[[], AbstractContextManager[Any]]

# --- recorders and datastores ---------------------------------------------------------

# The events table's columns as the recorders write them, in this order.
EVENT_COLUMNS = "originator_id, originator_version, topic, state"
# Every column of the PostgreSQL events table, with its type as psycopg names it: the
# COPY BINARY payload is laid out for the first four (bulk.py), read_log reads all five.
EVENT_COLUMN_TYPES = (
    ("originator_id", "uuid"),
    ("originator_version", "int8"),
    ("topic", "text"),
    ("state", "bytea"),
    ("notification_id", "int8"),
)


def datastore_of(recorder: Any) -> Any:
    """The datastore (and so the connection pool) a recorder uses."""
    return recorder.datastore


def connection(datastore: Any) -> AbstractContextManager[psycopg.Connection[Any]]:
    """PostgreSQL: a pooled connection in autocommit mode, rows as dicts, psycopg's
    errors raised as the library's (or the circuit's Checkout, once installed)."""
    return datastore.get_connection()  # type: ignore[no-any-return]


def sqlite_connection(datastore: Any, *, commit: bool) -> AbstractContextManager[Any]:
    """SQLite: a pooled sqlite3 connection (the writer's when `commit`); sqlite3's errors
    come through untranslated."""
    return datastore.get_connection(commit=commit)  # type: ignore[no-any-return]


def transaction(datastore: Any, *, commit: bool) -> AbstractContextManager[Any]:
    """A cursor in a transaction on either store, rows readable by column name; rolled
    back unless `commit`, and on any error."""
    return datastore.transaction(commit=commit)  # type: ignore[no-any-return]


def events_table(recorder: Any) -> str:
    """The events table as SQL names it: schema-qualified and quoted on PostgreSQL."""
    if isinstance(recorder, PostgresAggregateRecorder):
        return _qualified(recorder.datastore.schema, recorder.events_table_name)
    return recorder.events_table_name  # type: ignore[no-any-return]


@cache
def _qualified(schema: str, table: str) -> str:
    return SQL("{}.{}").format(Identifier(schema), Identifier(table)).as_string(None)


def sqlite_stored_id(originator_id: UUID | bytes) -> str:
    """An originator id as the SQLite recorders store it: UUID.hex."""
    return originator_id.hex() if isinstance(originator_id, bytes) else originator_id.hex


def sqlite_read_id(recorder: Any, stored: str) -> UUID:
    """An originator id read from SQLite, as the recorder's own reads convert it."""
    return recorder.convert_originator_id(stored)  # type: ignore[no-any-return]


def lock_statements(recorder: PostgresApplicationRecorder) -> list[Query]:
    """The statements the recorder opens every insert with: its lock timeout, then
    LOCK TABLE … IN EXCLUSIVE MODE (notification ids are issued in commit order)."""
    return list(recorder.lock_table_statements)


def notify_channel(recorder: PostgresApplicationRecorder) -> str:
    """The channel the recorder NOTIFYs on every insert."""
    return recorder.channel_name


def application_notify_channel(application_name: str) -> str:
    """The channel an application's PostgreSQL recorder NOTIFYs on, from its name alone
    (PostgresFactory names the events table `<name>_events`; the channel is the table's
    name): for the runners' LISTEN, which has no recorder."""
    return f"{application_name.lower()}_events".replace(".", "_")


class RetryPolicy(NamedTuple):
    errors: tuple[type[Exception], ...]
    attempts: int
    wait: float


# The recorders' insert_events retries a broken connection (a server restart) this way.
INSERT_RETRY = RetryPolicy((InterfaceError, OperationalError), attempts=10, wait=0.2)


# The statements below are composed once per table and kept as bytes or text: psycopg
# renders a Composed query again on every execute, which cost a tenth of a save.


def events_of_ids_statement(recorder: Any) -> bytes:
    """PostgreSQL, for libpq: every event of the ids in $1 (a uuid[]), grouped by id,
    in version order."""
    return _events_of_ids(recorder.datastore.schema, recorder.events_table_name)


@cache
def _events_of_ids(schema: str, table: str) -> bytes:
    return (
        f"SELECT {EVENT_COLUMNS} FROM {_qualified(schema, table)} "
        "WHERE originator_id = ANY($1::uuid[]) ORDER BY originator_id, originator_version"
    ).encode()


def sqlite_events_of_ids_statement(recorder: Any, ids: int) -> str:
    """SQLite: every event of `ids` ids (? each), grouped by id, in version order."""
    return (
        f"SELECT {EVENT_COLUMNS} FROM {recorder.events_table_name} "
        f"WHERE originator_id IN ({','.join('?' * ids)}) ORDER BY originator_id, originator_version"
    )


def event_positions(recorder: Any, originator_id: UUID) -> dict[int, int]:
    """Where each event of one aggregate is in the log: version -> notification id (its
    SQLite rowid). The library's select_events does not say."""
    table = events_table(recorder)
    if isinstance(recorder, PostgresAggregateRecorder):
        column, mark, key = "notification_id", "%s", originator_id
    else:
        column, mark, key = "rowid", "?", sqlite_stored_id(originator_id)
    statement = f"SELECT originator_version, {column} FROM {table} WHERE originator_id = {mark}"
    with transaction(recorder.datastore, commit=False) as cursor:
        cursor.execute(statement, (key,))
        rows = cursor.fetchall()
    return {int(version): int(position) for version, position in _pairs(rows)}


def _pairs(rows: list[Any]) -> list[tuple[Any, Any]]:
    """Rows as (first, second) whatever the row factory (tuples, dicts, sqlite3.Row)."""
    return [tuple(row.values())[:2] if isinstance(row, dict) else (row[0], row[1]) for row in rows]


def latest_states_statement(recorder: Any) -> bytes:
    """PostgreSQL, for psycopg: for the ids in the first %s (a uuid[]), each one's 16 id
    bytes and the state of its latest event of the topics in the second %s."""
    return _latest_states(recorder.datastore.schema, recorder.events_table_name)


@cache
def _latest_states(schema: str, table: str) -> bytes:
    # One index probe per id (a lateral join), whatever the planner estimates: `= ANY`
    # with a thousand ids was planned as a sequential scan of the whole log.
    return (
        "SELECT uuid_send(latest.originator_id), latest.state "
        "FROM unnest(%s::uuid[]) AS ids(id) CROSS JOIN LATERAL ("
        f"SELECT originator_id, state FROM {_qualified(schema, table)} "
        "WHERE originator_id = ids.id "
        "AND topic = ANY(%s) ORDER BY originator_version DESC LIMIT 1) AS latest"
    ).encode()


def sqlite_latest_states_statement(recorder: Any, ids: int, topics: int) -> str:
    """SQLite: the stored id and state of every event of `ids` ids of `topics` topics
    (? each, ids first), in version order: the last one of each id is its latest."""
    return (
        f"SELECT originator_id, state FROM {recorder.events_table_name} "
        f"WHERE originator_id IN ({','.join('?' * ids)}) "
        f"AND topic IN ({','.join('?' * topics)}) "
        "ORDER BY originator_id, originator_version"
    )


@cache  # one recorder per application
def copy_events_statement(recorder: PostgresApplicationRecorder) -> bytes:
    """One query opening an insert as the recorder's own does (its lock statements and
    its NOTIFY), then a binary COPY into the events table of EVENT_COLUMNS."""
    notify = SQL("NOTIFY {}").format(Identifier(notify_channel(recorder)))
    copy = SQL(f"COPY {events_table(recorder)} ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)")
    return SQL("; ").join([*lock_statements(recorder), notify, copy]).as_bytes(None)


def notifications_statement(recorder: Any, *, topics: bool) -> str:
    """PostgreSQL, for psycopg: the notifications from the first %s to the second, both
    inclusive, in log order (with `topics`, only those whose topic is in the third %s),
    as rows of (notification id, originator id as text, version, topic, state)."""
    return _notifications(recorder.datastore.schema, recorder.events_table_name, topics)


@cache
def _notifications(schema: str, table: str, topics: bool) -> str:
    return (
        "SELECT notification_id, originator_id::text, originator_version, topic, state "
        f"FROM {_qualified(schema, table)} WHERE notification_id >= %s AND notification_id <= %s"
        + (" AND topic = ANY(%s)" if topics else "")
        + " ORDER BY notification_id"
    )


def content_digests_statement(recorder: Any) -> str:
    """PostgreSQL, for psycopg: the notifications from the first %s to the second, both
    inclusive, in log order, as rows of (notification id, SHA-256 of its id, originator
    id as text, version and topic, each ended by a newline, then its state): what
    projections/chain.content_digest hashes, hashed where the rows are kept."""
    return _content_digests(recorder.datastore.schema, recorder.events_table_name)


@cache
def _content_digests(schema: str, table: str) -> str:
    head = " || E'\\n' || ".join(
        ("notification_id::text", "originator_id::text", "originator_version::text", "topic")
    )
    return (
        f"SELECT notification_id, sha256(convert_to({head} || E'\\n', 'UTF8') || state) "
        f"FROM {_qualified(schema, table)} WHERE notification_id >= %s AND notification_id <= %s"
        " ORDER BY notification_id"
    )


# --- the circuit ------------------------------------------------------------------------

# psycopg's errors as the datastore's get_connection raises them (most specific first),
# so the recorder's retries, the committer's clash handling and the 503 mapping see the
# same whether the library's get_connection or the circuit's Checkout handed it out.
DATASTORE_ERRORS: tuple[tuple[type[psycopg.Error], type[PersistenceError]], ...] = (
    (psycopg.InterfaceError, InterfaceError),
    (psycopg.OperationalError, OperationalError),
    (psycopg.DataError, DataError),
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.InternalError, InternalError),
    (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.NotSupportedError, NotSupportedError),
    (psycopg.DatabaseError, DatabaseError),
    (psycopg.Error, PersistenceError),
)


def persistence_error(error: psycopg.Error) -> PersistenceError:
    """psycopg's error as the datastore's get_connection would raise it."""
    kind = next(ours for theirs, ours in DATASTORE_ERRORS if isinstance(error, theirs))
    return kind(str(error))


def install_connection_checkout(datastore: Any, checkout: GetConnection) -> GetConnection:
    """Make every recorder sharing this datastore take its connections from `checkout`;
    returns the library's own get_connection (which bypasses it)."""
    own: GetConnection = datastore.get_connection
    datastore.get_connection = checkout
    return own


def connection_pool(datastore: Any) -> Any:
    """The datastore's psycopg_pool ConnectionPool (for its timeouts and connect options)."""
    return datastore.pool


def pooled_connection(datastore: Any) -> Any:
    """A connection from the datastore's pool, prepared as its get_connection prepares
    one (the pool opened if need be, the library's composite types registered); raises
    psycopg's errors. Give it back with `return_connection`."""
    pool = datastore.pool
    if pool.closed:
        pool.open(True, datastore.pool_open_timeout or 30.0)
    conn = pool.getconn()
    try:
        for info in datastore.psycopg_type_adapters.values():
            if not conn.adapters.types.get(info.oid):
                register_composite(info, conn)
    except BaseException:
        pool.putconn(conn)
        raise
    return conn


def return_connection(datastore: Any, conn: Any) -> None:
    """Give a `pooled_connection` back (one left inside a transaction is rolled back)."""
    datastore.pool.putconn(conn)


# --- tracking ---------------------------------------------------------------------------


def insert_tracking(recorder: Any, cursor: Any, tracking: Tracking) -> None:
    """Record a position in the caller's transaction (`cursor`), as the recorder's own
    insert_tracking does in a transaction of its own: it raises IntegrityError unless
    the position moves forward."""
    recorder._insert_tracking(cursor, tracking)


def tracking_table(recorder: Any) -> str:
    """The tracking recorder's table as SQL names it (schema-qualified on PostgreSQL)."""
    if isinstance(recorder, PostgresTrackingRecorder):
        return _qualified(recorder.datastore.schema, recorder.tracking_table_name)
    return "tracking"  # SQLiteTrackingRecorder's table, whatever it is asked to call it


class TrackingStatements(NamedTuple):
    """Our statements on the tracking table (%s placeholders), one row per name."""

    position: str  # a name's position, as the column `position`; no row if it has none
    start: str  # a row at position 0 for a name that has none yet
    begin: str  # a row at a given position for a name that has none yet (the first stands)
    forget: str  # a name's row deleted (never the library's migration row)


def tracking_statements(table: str) -> TrackingStatements:
    """Our statements on the tracking table `table` (as `tracking_table` names it)."""
    return TrackingStatements(
        position=f"SELECT notification_id AS position FROM {table} WHERE application_name=%s",
        start=f"INSERT INTO {table} (application_name, notification_id) VALUES (%s, 0) "
        "ON CONFLICT (application_name) DO NOTHING",
        begin=f"INSERT INTO {table} (application_name, notification_id) VALUES (%s, %s) "
        "ON CONFLICT (application_name) DO NOTHING",
        forget=f"DELETE FROM {table} WHERE application_name=%s",
    )


# --- mapping and transcoding ----------------------------------------------------------

TYPE_KEY = "_type_"  # a typed value is {TYPE_KEY: transcoding name, DATA_KEY: its data}
DATA_KEY = "_data_"
TYPE_KEY_JSON = b'"_type_"'  # TYPE_KEY as it appears in the stored JSON


def event_store_of(repository: Any) -> Any:
    """The EventStore a Repository reads from."""
    return repository.event_store


def mapper_of(events: Any) -> Mapper[UUID]:
    """The Mapper of an EventStore."""
    return events.mapper  # type: ignore[no-any-return]


def recorder_of(events: Any) -> Any:
    """The recorder of an EventStore."""
    return events.recorder


def transcoder_of(mapper: Mapper[UUID]) -> Any:
    """The Transcoder a Mapper encodes and decodes states with."""
    return mapper.transcoder


def is_sealed(mapper: Mapper[UUID]) -> bool:
    """Whether the mapper compresses or encrypts the states it stores."""
    return mapper.compressor is not None or mapper.cipher is not None


def seal(mapper: Mapper[UUID], state: bytes) -> bytes:
    """A transcoded state compressed and encrypted as to_stored_event does."""
    if mapper.compressor:
        state = mapper.compressor.compress(state)
    if mapper.cipher:
        state = mapper.cipher.encrypt(state)
    return state


def unseal(mapper: Mapper[UUID], state: bytes) -> bytes:
    """A stored state decrypted and decompressed, as to_domain_event does first: the
    JSON of the event's attributes but its originator id and version."""
    if mapper.cipher:
        state = mapper.cipher.decrypt(state)
    if mapper.compressor:
        state = mapper.compressor.decompress(state)
    return state


def note_decoder(mapper: Mapper[UUID]) -> Callable[[Any], Any]:
    """The mapper's to_domain_event, for rows that only look like StoredEvents (any
    object with originator_id, as a UUID or its text, originator_version, topic, state)."""
    return mapper.to_domain_event


def typed_value_decoder(transcoder: JSONTranscoder) -> Callable[[dict[str, Any]], Any]:
    """The transcoder's object hook: a typed value ({TYPE_KEY, DATA_KEY}) made its
    Python value again by its registered transcoding; any other dict returned as it is."""
    return transcoder._decode_obj


def transcoding_of(transcoder: JSONTranscoder, kind: type) -> Transcoding | None:
    """The transcoding registered for exactly this type (as the encoder's default looks
    it up), or None: its value is stored as {TYPE_KEY: .name, DATA_KEY: .encode(value)}."""
    return transcoder.types.get(kind)


def encoded_timestamp(moment: datetime) -> bytes:
    """A datetime as DatetimeAsISO stores it inside an event's state (its JSON string's
    content)."""
    return moment.isoformat().encode()
