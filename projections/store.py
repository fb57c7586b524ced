"""Read-model storage beside the event log: the plumbing every read model shares.

The views are the library's tracking recorders (SQLiteTrackingRecorder,
PostgresTrackingRecorder) extended with our tables, sharing the application's
datastore: a projection writes its rows and its position in ONE transaction,
so each event is applied exactly once. Positions live in the library's
tracking table, one row per projection (never truncated: its migration row
matters); the layout version each projection's tables were built with lives in
`ops_projection_versions`. Each read model's own tables and queries live in its
module (state.py, audit.py, chain.py). The tracking table's layout, the datastore's
transactions and the library's `_insert_tracking` are its internals, reached through
commands/library_internals.py.

Views opened `beside` a projection (projections/bluegreen.py) name that projection's
tables and its tracking row as its rebuild keeps them (`ops_audit__rebuild`,
`audit:rebuild`): the read model's own code builds the new tables unchanged.
"""

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import PersistenceError, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.rows import tuple_row

from commands.library_internals import (
    TrackingStatements,
    connection,
    datastore_of,
    insert_tracking,
    tracking_statements,
    tracking_table,
    transaction,
)
from commands.store import Store

CONTROL_DDL = """
CREATE TABLE IF NOT EXISTS {control} (
    name TEXT PRIMARY KEY,
    paused_until DOUBLE PRECISION NOT NULL
)"""
FAULTS_DDL = """
CREATE TABLE IF NOT EXISTS {faults} (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    reason TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
)"""
REBUILDS_DDL = """
CREATE TABLE IF NOT EXISTS {rebuilds} (
    name TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION NOT NULL,
    started_from BIGINT NOT NULL
)"""
VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS {versions} (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""


@dataclass(frozen=True)
class Fault:
    """Why a projection cannot go on: the position it is stuck at, in words."""

    position: int
    reason: str
    at: float  # when it last failed (Unix time)


@dataclass(frozen=True)
class RebuildRecord:
    """A rebuild begun beside a projection (and not yet swapped in or given up)."""

    started_at: float  # when this run of it began (Unix time)
    started_from: int  # the position it resumed from (0 for a fresh start)


BESIDE = "__rebuild"  # ops_audit is rebuilt as ops_audit__rebuild
ALTERNATE = "_alt"  # an index's second name (see ViewsMixin.index_name)


@dataclass(frozen=True)
class Beside:
    """How a rebuild names what it keeps beside a live projection: its tables
    (`ops_audit__rebuild`) and its own row in the tracking table (`audit:rebuild`)."""

    projection: str
    tables: frozenset[str]

    def table(self, name: str) -> str:
        return f"{name}{BESIDE}" if name in self.tables else name

    def key(self, name: str) -> str:
        return rebuild_key(name) if name == self.projection else name


def rebuild_key(name: str) -> str:
    """The tracking, version and fault rows of a rebuild of projection `name`."""
    return f"{name}:rebuild"


class StalePosition(Exception):
    """Another runner moved this projection's position first; re-read and go on."""


class ViewsMixin:
    """SQL helpers common to both stores. Statements are written with %s."""

    is_postgres: bool
    store: Store
    beside: Beside | None
    tracking: TrackingStatements  # our statements on the library's tracking table

    def _set_up_views(self, store: Store, beside: Beside | None) -> None:
        """What both stores' views set up once their recorder is made."""
        self.store = store
        self.beside = beside
        self.tracking = tracking_statements(tracking_table(self))

    def named(self, name: str) -> str:
        """A table's own name (unqualified), as these views name it."""
        return self.beside.table(name) if self.beside is not None else name

    def table(self, name: str) -> str:
        """A table's name qualified for this store, for our own SQL beside the log."""
        return self.store.table(self.named(name))

    def key(self, name: str) -> str:
        """The name a projection's position, layout version and fault are kept under."""
        return self.beside.key(name) if self.beside is not None else name

    def sql(self, statement: str) -> str:
        return statement if self.is_postgres else statement.replace("%s", "?")

    @contextmanager
    def write(self, *, reads_first: bool = False) -> Iterator[Any]:
        """A transaction that commits. One that `reads_first` (the schema, say) takes
        SQLite's write lock before it reads: begun as a reader, it could not become the
        writer once another connection had written (SQLITE_BUSY_SNAPSHOT, at once)."""
        with transaction(datastore_of(self), commit=True) as cursor:
            if reads_first and not self.is_postgres:
                cursor.execute(f"DELETE FROM {self.table('ops_projection_control')} WHERE 0")
            yield cursor

    @contextmanager
    def read(self, *, tuples: bool = False) -> Iterator[Any]:
        """A consistent snapshot: every SELECT inside sees the same instant. Rows are
        read by column name, or with `tuples` by position only (no dict per row on
        PostgreSQL: for reads of the whole log's worth)."""
        with transaction(datastore_of(self), commit=False) as cursor:
            if self.is_postgres:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                if tuples:
                    cursor.row_factory = tuple_row
            yield cursor

    def read_row(self, statement: str, params: Any = ()) -> Any:
        """The first row of one SELECT, None if none. One statement sees one instant by
        itself, so on PostgreSQL it runs on an autocommit connection: one round trip, not
        read()'s four (every runner asks its position and whether it is paused a few
        times a second, idle or not)."""
        if not self.is_postgres:
            with self.read() as cursor:
                self.execute(cursor, statement, params)
                return cursor.fetchone()
        with connection(datastore_of(self)) as conn, conn.cursor() as cursor:
            cursor.execute(self.sql(statement), params, prepare=True)
            return cursor.fetchone()

    def execute(self, cursor: Any, statement: str, params: Any = ()) -> None:
        cursor.execute(self.sql(statement), params)

    def execute_rows(
        self,
        cursor: Any,
        statement: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Run `statement` over a batch of rows, which it reads `FROM {rows}` as `r`
        with the given (name, PostgreSQL type) columns. On PostgreSQL that is ONE
        statement over `unnest` of an array per column (a round trip per statement
        per event was most of a rebuild's time); on SQLite, a one-row SELECT run for
        each row in turn (executemany), so each row sees the ones before it."""
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        if self.is_postgres:
            # Binary arrays (%b): the text format checked every value for quoting.
            arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
            source = f"unnest({arrays}) AS r({names})"
            cursor.execute(
                statement.format(rows=source), [list(c) for c in zip(*rows, strict=True)]
            )
        else:
            source = "(SELECT " + ", ".join(f"? AS {name}" for name, _ in columns) + ") AS r"
            cursor.executemany(statement.format(rows=source), rows)

    def create_views(self, statements: list[str]) -> None:
        """Create the tracking table and our tables. Concurrent first starts race on
        CREATE (PostgreSQL) and on the library's migration row, so retry a little."""
        for attempt in range(5):
            try:
                if self.is_postgres:
                    with self.write() as cursor:
                        key = advisory_key("ddl", str(self.store.schema))
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                        self._create_own(cursor, statements)
                    super().create_table()  # type: ignore[misc]
                else:
                    super().create_table()  # type: ignore[misc]
                    with self.write() as cursor:
                        self._create_own(cursor, statements)
                return
            except PersistenceError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _create_own(self, cursor: Any, statements: list[str]) -> None:
        control = CONTROL_DDL.format(control=self.table("ops_projection_control"))
        versions = VERSIONS_DDL.format(versions=self.table("ops_projection_versions"))
        faults = FAULTS_DDL.format(faults=self.table("ops_projection_faults"))
        rebuilds = REBUILDS_DDL.format(rebuilds=self.table("ops_projection_rebuilds"))
        for statement in [control, versions, faults, rebuilds, *statements]:
            cursor.execute(statement)

    def index_name(self, base: str, table: str) -> str:
        """The name of index `base` on `table` (a live name; these views' table).

        A table built beside the live one cannot take its indexes' names (index names
        are the schema's on PostgreSQL, the database's on SQLite, and SQLite cannot
        rename an index), so each index has two names, `base` and `base_alt`: a
        table keeps the one it has, a new table takes the one its twin does not hold.
        No swap renames an index, and `CREATE INDEX IF NOT EXISTS` stays idempotent."""
        own = self.named(table)
        names = (base, f"{base}{ALTERNATE}")
        held = self._index_tables(names)
        for name in names:
            if held.get(name) == own:
                return name
        for name in names:
            if name not in held:
                return name
        raise PersistenceError(
            f"both names of index {base} are held by other tables ({', '.join(held.values())})"
        )

    def name_implicit_indexes(self, table: str) -> None:
        """PostgreSQL names a new table's primary key and unique indexes after the table
        (`ops_audit__rebuild_pkey`, then `..._pkey1` once the swapped-in table holds that
        name): give those of a table built beside its live twin (`table` is the live
        name) the two names of index_name instead, so they stay put swap after swap.
        (SQLite renames such indexes with their table.)"""
        own = self.named(table)
        if not self.is_postgres or own == table:
            return
        prefix = f"{own}_"
        with self.read() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                (self.store.schema, own),
            )
            implicit = [
                r["indexname"] for r in cursor.fetchall() if r["indexname"].startswith(prefix)
            ]
        renames = [
            (name, self.index_name(f"{table}_{name[len(prefix) :]}", table)) for name in implicit
        ]
        with self.write() as cursor:
            for name, wanted in renames:
                cursor.execute(f"ALTER INDEX {self.store.table(name)} RENAME TO {wanted}")

    def _index_tables(self, names: Sequence[str]) -> dict[str, str]:
        """{index name: the table it is on} for those of `names` that exist."""
        with self.read() as cursor:
            if self.is_postgres:
                cursor.execute(
                    "SELECT indexname AS name, tablename AS tbl FROM pg_indexes "
                    "WHERE schemaname = %s AND indexname = ANY(%s)",
                    (self.store.schema, list(names)),
                )
            else:
                marks = ", ".join("?" * len(names))
                cursor.execute(
                    "SELECT name, tbl_name AS tbl FROM sqlite_master "
                    f"WHERE type = 'index' AND name IN ({marks})",
                    list(names),
                )
            return {row["name"]: row["tbl"] for row in cursor.fetchall()}

    def existing_tables(self, cursor: Any, names: Sequence[str]) -> set[str]:
        """Which of these tables (own names, unqualified) exist, in `cursor`'s transaction."""
        if self.is_postgres:
            self.execute(
                cursor,
                "SELECT tablename AS name FROM pg_tables "
                "WHERE schemaname = %s AND tablename = ANY(%s)",
                (self.store.schema, list(names)),
            )
        else:
            marks = ", ".join("%s" for _ in names)
            self.execute(
                cursor,
                f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks})",
                list(names),
            )
        return {row["name"] for row in cursor.fetchall()}

    # --- positions --------------------------------------------------------

    def position(self, name: str, cursor: Any | None = None) -> int:
        if cursor is None:
            row = self.read_row(self.tracking.position, (self.key(name),))
        else:
            self.execute(cursor, self.tracking.position, (self.key(name),))
            row = cursor.fetchone()
        return int(row["position"]) if row else 0

    def has_position(self, name: str) -> bool:
        """Whether this projection has a position yet (even 0)."""
        return self.read_row(self.tracking.position, (self.key(name),)) is not None

    def claim(self, cursor: Any, name: str, expected: int) -> None:
        """Start a write: lock this projection's tracking row and check that nobody
        advanced it since we read it (a second guard behind the runner lock)."""
        name = self.key(name)
        self.execute(cursor, self.tracking.start, (name,))
        lock = " FOR UPDATE" if self.is_postgres else ""
        self.execute(cursor, self.tracking.position + lock, (name,))
        row = cursor.fetchone()
        current = int(row["position"]) if row else 0
        if current != expected:
            raise StalePosition(f"{name}: expected position {expected}, found {current}")

    def advance(self, cursor: Any, name: str, position: int) -> None:
        insert_tracking(self, cursor, Tracking(self.key(name), position))

    def reset(self, name: str, statements: list[str], version: int) -> None:
        """Start one projection again from nothing: run `statements` (drop and
        recreate its tables), forget its position and record the layout version,
        all in one transaction: a crash leaves either the old or the new."""
        with self.write(reads_first=True) as cursor:
            if self.is_postgres:  # the same lock as create_views: DDL never races DDL
                key = advisory_key("ddl", str(self.store.schema))
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            for statement in statements:
                cursor.execute(statement)
            self.execute(cursor, self.tracking.forget, (self.key(name),))
            self._record_version(cursor, name, version)

    # --- layout versions ----------------------------------------------------

    def stored_version(self, name: str) -> int | None:
        """The layout version this projection's tables were built with; None if
        never recorded (tables made before versions existed, or none yet)."""
        versions = self.table("ops_projection_versions")
        with self.read() as cursor:
            self.execute(cursor, f"SELECT version FROM {versions} WHERE name=%s", (self.key(name),))
            row = cursor.fetchone()
        return int(row["version"]) if row else None

    def record_version(self, name: str, version: int) -> None:
        with self.write() as cursor:
            self._record_version(cursor, name, version)

    def _record_version(self, cursor: Any, name: str, version: int) -> None:
        self.execute(
            cursor,
            f"INSERT INTO {self.table('ops_projection_versions')} (name, version) "
            "VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET version = excluded.version",
            (self.key(name), version),
        )

    # --- faults: a projection that cannot store an event says so -------------

    def record_fault(self, name: str, position: int, reason: str) -> None:
        with self.write() as cursor:
            self.execute(
                cursor,
                f"INSERT INTO {self.table('ops_projection_faults')} (name, position, reason, at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "position = excluded.position, reason = excluded.reason, at = excluded.at",
                (self.key(name), position, reason, time.time()),
            )

    def clear_fault(self, name: str) -> None:
        with self.write() as cursor:
            self.execute(
                cursor,
                f"DELETE FROM {self.table('ops_projection_faults')} WHERE name=%s",
                (self.key(name),),
            )

    def faults(self) -> dict[str, Fault]:
        with self.read() as cursor:
            self.execute(
                cursor,
                f"SELECT name, position, reason, at FROM {self.table('ops_projection_faults')}",
            )
            rows = cursor.fetchall()
        return {r["name"]: Fault(int(r["position"]), r["reason"], float(r["at"])) for r in rows}

    # --- rebuilds beside a projection (projections/bluegreen.py) -------------

    def record_rebuild(self, name: str, started_from: int) -> None:
        with self.write() as cursor:
            self.execute(
                cursor,
                f"INSERT INTO {self.table('ops_projection_rebuilds')} "
                "(name, started_at, started_from) VALUES (%s, %s, %s) ON CONFLICT (name) "
                "DO UPDATE SET started_at = excluded.started_at, "
                "started_from = excluded.started_from",
                (name, time.time(), started_from),
            )

    def hand_over(self, cursor: Any, name: str, position: int, version: int) -> None:
        """In a swap's transaction: projection `name` takes its rebuild's position and
        layout version, its fault is cleared, and the rebuild's own rows go."""
        self.execute(cursor, self.tracking.forget, (name,))
        self.execute(cursor, self.tracking.begin, (name, position))
        self._record_version(cursor, name, version)
        self.execute(
            cursor, f"DELETE FROM {self.table('ops_projection_faults')} WHERE name=%s", (name,)
        )
        self.forget_rebuild(cursor, name)

    def forget_rebuild(self, cursor: Any, name: str) -> None:
        """The rows of a rebuild of projection `name` (swapped in or given up)."""
        key = rebuild_key(name)
        self.execute(cursor, self.tracking.forget, (key,))
        for table in ("ops_projection_versions", "ops_projection_faults"):
            self.execute(cursor, f"DELETE FROM {self.table(table)} WHERE name=%s", (key,))
        self.execute(
            cursor, f"DELETE FROM {self.table('ops_projection_rebuilds')} WHERE name=%s", (name,)
        )

    def rebuilds(self) -> dict[str, RebuildRecord]:
        with self.read() as cursor:
            self.execute(
                cursor,
                f"SELECT name, started_at, started_from FROM "
                f"{self.table('ops_projection_rebuilds')}",
            )
            rows = cursor.fetchall()
        return {
            r["name"]: RebuildRecord(float(r["started_at"]), int(r["started_from"])) for r in rows
        }

    # --- hand-over (rebuild asks the active runner to stand by) -------------

    def pause(self, name: str, seconds: float) -> None:
        control = self.table("ops_projection_control")
        with self.write() as cursor:
            self.execute(
                cursor,
                f"INSERT INTO {control} (name, paused_until) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET paused_until = excluded.paused_until",
                (name, time.time() + seconds),
            )

    def resume(self, name: str) -> None:
        control = self.table("ops_projection_control")
        with self.write() as cursor:
            self.execute(cursor, f"DELETE FROM {control} WHERE name=%s", (name,))

    def is_paused(self, name: str) -> bool:
        control = self.table("ops_projection_control")
        row = self.read_row(f"SELECT paused_until FROM {control} WHERE name=%s", (name,))
        return bool(row) and float(row["paused_until"]) > time.time()


class SQLiteViews(ViewsMixin, SQLiteTrackingRecorder):
    is_postgres = False

    def __init__(self, datastore: Any, store: Store, beside: Beside | None = None) -> None:
        super().__init__(datastore)
        self._set_up_views(store, beside)


class PostgresViews(ViewsMixin, PostgresTrackingRecorder):
    is_postgres = True

    def __init__(self, datastore: Any, store: Store, beside: Beside | None = None) -> None:
        super().__init__(datastore, tracking_table_name="pmops_tracking")
        self._set_up_views(store, beside)


def open_views(app: Any, store: Store, beside: Beside | None = None) -> ViewsMixin:
    """Views over the application's own datastore (one pool for everything); `beside`
    a projection, they name its tables and rows as its rebuild keeps them."""
    datastore = datastore_of(app.recorder)
    if store.is_postgres:
        return PostgresViews(datastore, store, beside)
    return SQLiteViews(datastore, store, beside)


def advisory_key(*parts: str) -> int:
    digest = hashlib.sha256(":".join(("pm-ops", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
