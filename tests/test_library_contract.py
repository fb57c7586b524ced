"""The eventsourcing internals we rely on (commands/library_internals.py), checked against
the pinned library: one test per internal, on SQLite and PostgreSQL where the store
matters. A failure names the internal that moved and the function of ours that relies on
it; README "Upgrading eventsourcing" says what to do."""

import re
import sqlite3
import tomllib
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import psycopg
import psycopg_pool
import pytest
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Mapper,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.utils import Environment, get_topic
from psycopg import sql

from aggregates import Community
from api.bootstrap import open_application
from api.config import Config
from commands import circuit, library_internals
from commands.application import OpsApplication
from commands.bulk import latest_states, read_stored, write_aggregates
from commands.library_internals import (
    DATA_KEY,
    DATASTORE_ERRORS,
    EVENT_COLUMN_TYPES,
    EVENT_COLUMNS,
    INSERT_RETRY,
    TYPE_KEY,
    TYPE_KEY_JSON,
    application_notify_channel,
    connection,
    connection_pool,
    copy_events_statement,
    datastore_of,
    encoded_timestamp,
    event_positions,
    event_store_of,
    events_table,
    insert_tracking,
    install_connection_checkout,
    is_sealed,
    lock_statements,
    mapper_of,
    note_decoder,
    notify_channel,
    persistence_error,
    pooled_connection,
    recorder_of,
    return_connection,
    seal,
    sqlite_connection,
    sqlite_read_id,
    sqlite_stored_id,
    tracking_statements,
    tracking_table,
    transaction,
    transcoder_of,
    transcoding_of,
    typed_value_decoder,
    unseal,
)
from commands.tokens import admin_meta
from projections.chain import content_digest, read_digests
from projections.log import Note, read_log
from projections.store import open_views
from tests.conftest import POSTGRES_URL, new_id

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"
ONLY_POSTGRES = pytest.mark.parametrize("config", ["postgres"], indirect=True)
ONLY_SQLITE = pytest.mark.parametrize("config", ["sqlite"], indirect=True)


@contextmanager
def relied_on(*ours: str) -> Iterator[None]:
    """Any failure inside is reported as the library internal that moved: the one behind
    the function of library_internals it came out of, else the one behind `ours` (names
    on that internal's line of library_internals' docstring). With no `ours`, a failure
    that came out of no such function is raised as it is."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as error:
        names = _came_out_of(error) or ours
        if not names:
            raise
        pytest.fail(
            f"eventsourcing internal moved: {_internal_behind(names[0])} — {_relying(names)} "
            "relies on it; see README 'Upgrading eventsourcing'. "
            f"What the installed library did: {type(error).__name__}: {error}",
            pytrace=False,
        )


def _relying(names: tuple[str, ...]) -> str:
    if "/" in names[0]:  # a module of ours relies on it directly
        return names[0]
    called = (f"{name}()" if name.islower() else name for name in names)
    return "commands/library_internals.py " + ", ".join(called)


def _internals() -> list[str]:
    """library_internals' docstring lines that each name one internal."""
    return [line for line in (library_internals.__doc__ or "").splitlines() if " — " in line]


def _internal_behind(name: str) -> str:
    """The internal a name of ours stands for, as library_internals' docstring says."""
    [line] = [line for line in _internals() if f"`{name}`" in line or f"({name})" in line]
    return line.removeprefix("- ").split(" — ")[0]


def _came_out_of(error: BaseException) -> tuple[str] | None:
    """The innermost library_internals function named in its docstring that `error`
    came out of."""
    functions = [
        frame.f_code.co_name
        for frame, _ in traceback.walk_tb(error.__traceback__)
        if frame.f_code.co_filename == library_internals.__file__
    ]
    named = [f for f in reversed(functions) if any(f"`{f}`" in line for line in _internals())]
    return (named[0],) if named else None


@pytest.fixture
def app(config: Config) -> Iterator[OpsApplication]:
    """The application as the services open it, without the circuit in front."""
    with relied_on():
        opened = open_application(config)
    yield opened
    opened.close()


@pytest.fixture
def memory_app() -> Iterator[OpsApplication]:
    with relied_on():
        opened = open_application(Config(database_url="sqlite:///:memory:"))
    yield opened
    opened.close()


def saved_community(app: OpsApplication, renames: int = 0) -> Community:
    community = Community(community_id=new_id(), name="Founders", meta=admin_meta("contract"))
    for n in range(renames):
        community.rename(f"Founders {n}", meta=admin_meta("contract"))
    app.save(community)
    return community


def first_event() -> Any:
    community = Community(community_id=new_id(), name="Zoë's ☃ club", meta=admin_meta("contract"))
    return community.collect_events()[0]


def test_every_name_of_library_internals_is_listed_with_its_internal() -> None:
    listed = re.findall(r"`([A-Za-z_]+)`", "\n".join(_internals()))
    assert listed, "library_internals' docstring lists no internals"
    twice = sorted({name for name in listed if listed.count(name) > 1})
    assert not twice, f"listed for more than one internal: {twice}"
    missing = [name for name in listed if not hasattr(library_internals, name)]
    assert not missing, f"listed in library_internals' docstring but not defined: {missing}"
    public = [
        name
        for name, value in vars(library_internals).items()
        if not name.startswith("_")
        and getattr(value, "__module__", library_internals.__name__) == library_internals.__name__
        and not isinstance(value, type | ModuleType)
    ]
    unlisted = [name for name in public if name not in listed]
    assert not unlisted, f"library_internals names no internal for: {unlisted}"


# --- the pin --------------------------------------------------------------------------------


def test_the_installed_library_is_the_pinned_one() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [pin] = [d for d in dependencies if d.startswith("eventsourcing")]
    pinned = pin.split("==")[1]
    assert version("eventsourcing") == pinned, (
        f"eventsourcing {version('eventsourcing')} is installed but pyproject.toml pins "
        f"{pinned}: reinstall (make install), or upgrade as README 'Upgrading eventsourcing' says"
    )


# --- recorders and datastores -------------------------------------------------------------


def test_the_recorders_share_one_datastore(app, config):
    with relied_on("datastore_of"):
        datastore = datastore_of(app.recorder)
        assert isinstance(datastore, PostgresDatastore if config.is_postgres else SQLiteDatastore)
        assert datastore_of(open_views(app, config.store)) is datastore


@ONLY_POSTGRES
def test_a_postgres_connection_is_pooled_autocommit_with_dict_rows(app):
    with relied_on("connection"):
        with connection(datastore_of(app.recorder)) as conn:
            assert isinstance(conn, psycopg.Connection)
            assert conn.autocommit, "bulk's COPY and the rate limiter rely on autocommit"
            assert conn.execute("SELECT 1 AS one").fetchone()["one"] == 1
        with pytest.raises(ProgrammingError), connection(datastore_of(app.recorder)) as conn:
            conn.execute("SELECT * FROM no_such_table_for_the_contract")


@ONLY_SQLITE
def test_a_sqlite_connection_lets_sqlite3_errors_through(app):
    with relied_on("sqlite_connection"):
        with sqlite_connection(datastore_of(app.recorder), commit=True) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1 AS one")
            assert cursor.fetchone()["one"] == 1
        with (
            pytest.raises(sqlite3.Error),
            sqlite_connection(datastore_of(app.recorder), commit=True) as conn,
        ):
            conn.cursor().execute("SELECT * FROM no_such_table_for_the_contract")


def test_a_transaction_commits_only_when_asked(app, config):
    table = config.store.table(f"contract_{uuid.uuid4().hex[:12]}")
    mark = "%s" if config.is_postgres else "?"
    insert = f"INSERT INTO {table} (name, n) VALUES ({mark}, {mark})"
    with relied_on("transaction"):
        datastore = datastore_of(app.recorder)
        with transaction(datastore, commit=True) as cursor:
            cursor.execute(f"CREATE TABLE {table} (name TEXT PRIMARY KEY, n INTEGER)")
        with transaction(datastore, commit=False) as cursor:
            cursor.execute(insert, ("read only", 1))
        with pytest.raises(RuntimeError), transaction(datastore, commit=True) as cursor:
            cursor.execute(insert, ("failed", 2))
            raise RuntimeError("the caller failed")
        with transaction(datastore, commit=True) as cursor:
            cursor.executemany(insert, [("kept", 3), ("also kept", 4)])
        with transaction(datastore, commit=False) as cursor:
            if config.is_postgres:
                assert isinstance(cursor, psycopg.Cursor), "the views set its row_factory"
            cursor.execute(f"SELECT name, n FROM {table} ORDER BY n")
            assert [(row["name"], row["n"]) for row in cursor.fetchall()] == [
                ("kept", 3),
                ("also kept", 4),
            ]


def test_the_events_table_has_the_columns_we_read_and_copy(app, config):
    community = saved_community(app)
    with relied_on("events_table", "EVENT_COLUMNS", "EVENT_COLUMN_TYPES"):
        with transaction(datastore_of(app.recorder), commit=False) as cursor:
            if config.is_postgres:
                cursor.execute(f"SELECT * FROM {events_table(app.recorder)} LIMIT 0")
                types = cursor.connection.adapters.types
                found = [(c.name, types.get(c.type_code).name) for c in cursor.description]
                assert found == list(EVENT_COLUMN_TYPES)
                return
            cursor.execute(f"SELECT rowid, {EVENT_COLUMNS} FROM {events_table(app.recorder)}")
            rows = cursor.fetchall()
        [stored] = [row for row in rows if row["originator_id"] == sqlite_stored_id(community.id)]
        assert stored["rowid"] == app.recorder.max_notification_id()


@ONLY_SQLITE
def test_sqlite_stores_originator_ids_as_uuid_hex(app):
    community = saved_community(app)
    with relied_on("sqlite_stored_id", "sqlite_read_id"):
        with transaction(datastore_of(app.recorder), commit=False) as cursor:
            cursor.execute(f"SELECT originator_id FROM {events_table(app.recorder)}")
            stored = {row["originator_id"] for row in cursor.fetchall()}
        assert sqlite_stored_id(community.id) == community.id.hex in stored
        assert sqlite_stored_id(community.id.bytes) == community.id.hex
        assert sqlite_read_id(app.recorder, community.id.hex) == community.id


def test_our_reads_of_the_events_table_find_what_the_library_wrote(app):
    renamed, created = saved_community(app, renames=2), saved_community(app)
    missing = uuid.uuid4()
    with relied_on("events_of_ids_statement", "sqlite_events_of_ids_statement"):
        found = read_stored(app.events, [renamed.id, created.id, missing])
        assert found[missing] == []
        for aggregate in (renamed, created):
            assert found[aggregate.id] == list(app.recorder.select_events(aggregate.id))


def test_the_positions_of_an_aggregates_events_are_where_the_log_has_them(app):
    community = saved_community(app, renames=2)
    with relied_on("event_positions"):
        positions = event_positions(app.recorder, community.id)
        notes = app.recorder.select_notifications(1, 10**6)
        wanted = {n.originator_version: n.id for n in notes if n.originator_id == community.id}
        assert positions == wanted and len(wanted) == 3


def test_the_latest_state_of_some_topics_is_the_librarys_latest(app):
    community = saved_community(app, renames=2)
    created, renamed = get_topic(Community.Created), get_topic(Community.Renamed)
    stored = app.recorder.select_events(community.id)
    with relied_on("latest_states_statement", "sqlite_latest_states_statement"):
        key = community.id.bytes
        assert latest_states(app.events, [key], [renamed]) == {key: stored[-1].state}
        assert latest_states(app.events, [key], [created]) == {key: stored[0].state}
        assert latest_states(app.events, [uuid.uuid4().bytes], [created]) == {}


@ONLY_POSTGRES
def test_the_lock_statements_lock_the_events_table_exclusively(app):
    with relied_on("lock_statements"):
        with connection(datastore_of(app.recorder)) as conn:
            rendered = [statement.as_string(conn) for statement in lock_statements(app.recorder)]
        assert any("lock_timeout" in text for text in rendered), rendered
        locks = f"LOCK TABLE {events_table(app.recorder)} IN EXCLUSIVE MODE"
        assert locks in rendered, rendered


@ONLY_POSTGRES
def test_our_copy_and_the_librarys_insert_notify_the_channel_runners_listen_on(app):
    with relied_on("notify_channel", "application_notify_channel"):
        channel = notify_channel(app.recorder)
        assert channel == application_notify_channel(OpsApplication.name)
        assert f'NOTIFY "{channel}"'.encode() in copy_events_statement(app.recorder)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as listener:
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            saved_community(app)  # the library's insert_events
            assert list(listener.notifies(timeout=10, stop_after=1)), "the library's insert"
            community = Community(community_id=new_id(), name="x", meta=admin_meta("contract"))
            write_aggregates(app, [community])  # our COPY
            assert list(listener.notifies(timeout=10, stop_after=1)), "our COPY"


@ONLY_POSTGRES
def test_our_copy_writes_what_the_library_reads_in_commit_order(app):
    before = app.recorder.max_notification_id() or 0
    communities = [
        Community(community_id=new_id(), name=f"c{n}", meta=admin_meta("contract"))
        for n in range(3)
    ]
    with relied_on("copy_events_statement"):
        write_aggregates(app, communities)
        notes = app.recorder.select_notifications(before + 1, 10)
        assert [n.originator_id for n in notes] == [c.id for c in communities]
        for community, note in zip(communities, notes, strict=True):
            assert app.mapper.to_domain_event(note).name == community.name


@ONLY_POSTGRES
def test_the_recorder_retries_a_broken_connection_as_our_copy_does(app):
    attempts: list[type[Exception]] = []

    def failing_with(error: type[Exception]) -> Any:
        @contextmanager
        def checkout() -> Iterator[Any]:
            attempts.append(error)
            raise error("contract test: no connection")
            yield

        return checkout

    stored = app.mapper.to_stored_event(first_event())
    with relied_on("INSERT_RETRY"):
        datastore = datastore_of(app.recorder)
        own = install_connection_checkout(datastore, failing_with(OperationalError))
        try:
            with pytest.raises(OperationalError):
                app.recorder.insert_events([stored])
            assert len(attempts) == INSERT_RETRY.attempts
            assert set(INSERT_RETRY.errors) >= {OperationalError}
            attempts.clear()
            install_connection_checkout(datastore, failing_with(PersistenceError))
            with pytest.raises(PersistenceError):
                app.recorder.insert_events([stored])
            assert len(attempts) == 1, "the circuit's refusal must not be retried"
        finally:
            install_connection_checkout(datastore, own)


@ONLY_POSTGRES
def test_every_recorder_takes_its_connections_from_the_installed_checkout(app):
    checkouts: list[int] = []
    with relied_on("install_connection_checkout"):
        datastore = datastore_of(app.recorder)
        own = datastore.get_connection

        def counting() -> Any:
            checkouts.append(1)
            return own()

        assert install_connection_checkout(datastore, counting) == own
        try:
            saved_community(app)  # the library's insert_events
            app.recorder.max_notification_id()
            assert len(checkouts) >= 2
        finally:
            install_connection_checkout(datastore, own)


@ONLY_POSTGRES
def test_a_pooled_connection_is_prepared_as_get_connection_prepares_one(app, config):
    with relied_on("pooled_connection", "connection_pool", "return_connection"):
        datastore = datastore_of(app.recorder)
        assert isinstance(connection_pool(datastore), psycopg_pool.ConnectionPool)
        assert datastore.psycopg_type_adapters, "the recorder's composite types"
        env = config.store.postgres_env()
        fresh = PostgresDatastore(
            env["POSTGRES_DBNAME"],
            env["POSTGRES_HOST"],
            env["POSTGRES_PORT"],
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            schema=env["POSTGRES_SCHEMA"],
        )
        fresh.psycopg_type_adapters.update(datastore.psycopg_type_adapters)
        conn = pooled_connection(fresh)  # its pool was never opened
        try:
            for info in fresh.psycopg_type_adapters.values():
                assert conn.adapters.types.get(info.oid) is not None
        finally:
            return_connection(fresh, conn)
            fresh.close()
        circuit.install(datastore)  # the recorders now check out through pooled_connection
        community = saved_community(app, renames=1)
        assert len(app.recorder.select_events(community.id)) == 2


@ONLY_POSTGRES
def test_psycopg_errors_become_the_library_errors_get_connection_raises(app):
    with relied_on("persistence_error", "DATASTORE_ERRORS"):
        own = datastore_of(app.recorder).get_connection  # no circuit here: the library's own
        for theirs, ours in DATASTORE_ERRORS:
            with pytest.raises(PersistenceError) as raised, own():
                raise theirs("contract test")
            assert type(raised.value) is ours, (theirs, type(raised.value))
            assert type(persistence_error(theirs("contract test"))) is ours


# --- tracking ----------------------------------------------------------------------------


def test_a_position_is_written_in_the_callers_transaction(app, config):
    name = f"contract-{uuid.uuid4().hex[:8]}"
    with relied_on("insert_tracking"):
        views = open_views(app, config.store)
        views.create_views([])
        datastore = datastore_of(app.recorder)
        with transaction(datastore, commit=True) as cursor:
            insert_tracking(views, cursor, Tracking(name, 5))
        assert views.max_tracking_id(name) == 5
        with pytest.raises(RuntimeError), transaction(datastore, commit=True) as cursor:
            insert_tracking(views, cursor, Tracking(name, 9))
            raise RuntimeError("the projection's rows failed")
        assert views.max_tracking_id(name) == 5
        with pytest.raises(IntegrityError), transaction(datastore, commit=True) as cursor:
            insert_tracking(views, cursor, Tracking(name, 5))


def test_our_tracking_statements_read_and_write_the_librarys_rows(app, config):
    name, other = (f"contract-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with relied_on("tracking_table", "tracking_statements"):
        views = open_views(app, config.store)
        views.create_views([])
        statements = tracking_statements(tracking_table(views))
        views.insert_tracking(Tracking(name, 7))  # the library's own
        with views.read() as cursor:
            views.execute(cursor, statements.position, (name,))
            assert cursor.fetchone()["position"] == 7
            views.execute(cursor, statements.position, (other,))
            assert cursor.fetchone() is None
        with views.write() as cursor:
            views.execute(cursor, statements.start, (other,))
            views.execute(cursor, statements.start, (name,))  # has one: left alone
            views.execute(cursor, statements.forget, (name,))
        assert views.max_tracking_id(other) == 0
        assert views.max_tracking_id(name) is None


# --- mapping and transcoding --------------------------------------------------------------


def test_the_application_reads_through_its_event_store(memory_app):
    with relied_on("event_store_of", "mapper_of", "recorder_of", "transcoder_of", "is_sealed"):
        events = event_store_of(memory_app.repository)
        assert events is memory_app.events
        assert mapper_of(events) is memory_app.mapper
        assert recorder_of(events) is memory_app.recorder
        transcoder = transcoder_of(memory_app.mapper)
        assert transcoder.decode(transcoder.encode({"a": 1})) == {"a": 1}
        assert not is_sealed(memory_app.mapper)
        sealed = Mapper(transcoder=transcoder, compressor=ZlibCompressor())
        assert is_sealed(sealed) and transcoder_of(sealed) is transcoder


def test_a_stored_state_is_the_events_attributes_compressed_then_encrypted(memory_app):
    cipher = AESCipher(Environment(env={AESCipher.CIPHER_KEY: AESCipher.create_key(32)}))
    event = first_event()
    with relied_on("seal", "unseal"):
        transcoder = transcoder_of(memory_app.mapper)
        mapper = Mapper(transcoder=transcoder, compressor=ZlibCompressor(), cipher=cipher)
        plain = Mapper(transcoder=transcoder).to_stored_event(event).state
        attributes = set(vars(event)) - {"originator_id", "originator_version"}
        assert set(orjson.loads(plain)) == attributes
        for value in (event.name, event.community_id):  # each value's encoding, verbatim
            assert transcoder.encode(value) in plain
        stored = mapper.to_stored_event(event)
        assert unseal(mapper, stored.state) == plain
        resealed = StoredEvent(
            stored.originator_id, stored.originator_version, stored.topic, seal(mapper, plain)
        )
        assert vars(mapper.to_domain_event(resealed)) == vars(event)


def test_the_mapper_decodes_log_rows_with_their_id_as_text(app):
    community = saved_community(app, renames=1)
    with relied_on("note_decoder"):
        decode = note_decoder(app.mapper)
        [stored, _] = app.recorder.select_events(community.id)
        row = Note(1, str(community.id), stored.originator_version, stored.topic, stored.state)
        assert vars(decode(row)) == vars(app.mapper.to_domain_event(stored))
        assert decode(row).originator_id == community.id


def test_the_log_read_fast_is_the_log_the_library_reads(app):
    saved_community(app, renames=1)
    saved_community(app)
    head = app.recorder.max_notification_id()
    renamed = [get_topic(Community.Renamed)]
    with relied_on("notifications_statement"):
        for topics, library in (
            ([], app.recorder.select_notifications(1, head)),
            (renamed, app.recorder.select_notifications(1, head, topics=renamed)),
        ):
            ours = read_log(app.recorder, 1, head, topics)
            assert [(n.id, n.topic, n.state) for n in ours] == [
                (n.id, n.topic, n.state) for n in library
            ]
            assert [str(n.originator_id) for n in ours] == [str(n.originator_id) for n in library]


def test_the_log_hashed_where_it_is_kept_is_hashed_as_the_chain_hashes_it(app):
    saved_community(app, renames=2)
    community = Community(community_id=new_id(), name="Zoë's ☃\nclub", meta=admin_meta("x"))
    app.save(community)
    head = app.recorder.max_notification_id()
    with relied_on("content_digests_statement"):
        library = app.recorder.select_notifications(1, head)
        assert read_digests(app.recorder, library[1].id, head) == [
            (note.id, content_digest(note)) for note in library[1:]
        ]


def test_a_typed_value_is_revived_by_the_transcoders_hook(memory_app):
    moment = datetime(2026, 12, 3, 16, 32, 5, 123456, tzinfo=UTC)
    with relied_on("typed_value_decoder", "TYPE_KEY", "DATA_KEY", "TYPE_KEY_JSON"):
        transcoder = transcoder_of(memory_app.mapper)
        encoded = transcoder.encode({"at": moment})
        assert TYPE_KEY_JSON in encoded
        typed = orjson.loads(encoded)["at"]
        assert set(typed) == {TYPE_KEY, DATA_KEY}
        revive = typed_value_decoder(transcoder)
        assert revive(typed) == moment
        assert revive({"plain": "dict"}) == {"plain": "dict"}


def test_a_registered_types_value_is_encoded_as_its_typed_object(memory_app):
    moment = datetime(2026, 12, 3, 16, 32, 5, 123456, tzinfo=UTC)
    owner = uuid.uuid4()
    with relied_on("transcoding_of", "TYPE_KEY", "DATA_KEY"):
        library = JSONTranscoder()
        memory_app.register_transcodings(library)
        for value in (moment, owner):
            transcoding = transcoding_of(library, type(value))
            assert transcoding is not None
            typed = {TYPE_KEY: transcoding.name, DATA_KEY: transcoding.encode(value)}
            assert library.encode({"v": value}) == orjson.dumps({"v": typed})
        assert transcoding_of(library, object) is None


def test_the_transcoder_encodes_as_orjson_does():
    document = {"ä": "☃ ü", "n": [1, 2.5, None, True], "q": {"s": '"x"\\y'}, "e": ""}
    with relied_on("commands/transcoder.py"):
        assert JSONTranscoder().encode(document) == orjson.dumps(document)


def test_an_events_timestamp_is_stored_as_its_isoformat(memory_app):
    event = first_event()
    with relied_on("encoded_timestamp"):
        state = Mapper(transcoder=transcoder_of(memory_app.mapper)).to_stored_event(event).state
        assert state.count(encoded_timestamp(event.timestamp)) == 1
        assert Community.Created.create_timestamp().tzinfo is not None
