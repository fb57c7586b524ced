"""Rebuilding a read model beside the live one, then swapping it in at once (issue 20).

Every rebuild — `pm-ops projections rebuild NAME` (or `--all`), and the one a runner
does when a projection's layout version changed — goes the same way:

1. It takes a lock of its own (`NAME-rebuild`): a second rebuild of the same
   projection is refused while it runs.
2. It builds new tables beside the live ones, in the same schema under their own
   names (`ops_audit__rebuild`), with its own position (`audit:rebuild`): views opened
   `Beside` the projection name them, so the read model's own code builds them. Own
   names rather than a schema of their own: SQLite has no schemas to move a table
   between, one way works on both stores, and it needs no right to create schemas.
   Tables left by an interrupted rebuild of the same layout are resumed.
3. It replays the log into them up to its head while the live runner keeps the live
   tables current and readers read those. The chain and the checkpoint tree are
   checked against the live ones as they are built (`check_beside`).
4. The hand-over: the live runner is asked to stand by (it lets go of its lock), the
   new tables take the last events (so they are never behind what readers saw) and
   are checked once more, then ONE transaction renames the live tables away and the
   new ones in, gives the live position the new tables' and records the layout.
   Readers see the old tables before it and the new ones after it, nothing between.
5. The replaced tables are dropped; the runner carries on from the new position.

A rebuild that fails for good (an event it cannot store, an altered log) drops what it
built; one interrupted (Ctrl-C, kill -9, the store gone) leaves its tables for the next
rebuild to resume. The live tables are untouched either way. A rebuild needs room for
a second copy of the projection's tables until the swap.
"""

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from commands.store import Store
from projections.projection import (
    LIVE_BATCH,
    REBUILD_BATCH,
    Halted,
    LogAltered,
    TableProjection,
    Unstorable,
)
from projections.runner import RunnerLock, make_lock
from projections.store import (
    BESIDE,
    Beside,
    ViewsMixin,
    advisory_key,
    open_views,
    rebuild_key,
)

log = logging.getLogger("pm_ops.projections")

RETIRED = "__retired"  # a replaced table, between the swap and its drop
STAND_BY_SECONDS = 15.0  # the live runner stands by this long unless asked again
LOCK_TIMEOUT_MS = 50  # PostgreSQL: readers queue behind the swap's locks no longer than this
SWAP_PATIENCE = 300.0  # seconds of retrying a swap that readers keep from its locks
NEAR_ENOUGH = LIVE_BATCH  # positions left after a pass that the hand-over can take
OLDER_READERS_SECONDS = 2.0  # PostgreSQL: at most this long for older snapshots to end


OLDER_READERS = """
SELECT count(DISTINCT a.pid) AS older
FROM pg_stat_activity a
JOIN pg_locks l ON l.pid = a.pid
JOIN pg_database d ON d.oid = l.database AND d.datname = current_database()
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND a.pid <> pg_backend_pid() AND a.backend_xmin IS NOT NULL
  AND a.xact_start < %s
"""


class RebuildRunning(Halted):
    """Another rebuild of the same projection holds its lock."""


class HandOverTimeout(Halted):
    """The live runner did not stand by in time; the rebuilt tables are kept."""


class _Interrupted(Exception):
    """The runner doing the rebuild is stopping (its tables are kept to resume)."""


@dataclass(frozen=True)
class RebuildStatus:
    """A rebuild beside projection `name`, as `projections status` and readers see it."""

    name: str
    position: int  # how far the new tables have got
    head: int
    running: bool  # False: interrupted, and the next rebuild resumes it
    rate: float | None  # events/s since this run of it began (None: too soon to say)

    @property
    def eta_seconds(self) -> float | None:
        if not self.running or not self.rate:
            return None
        return max(0, self.head - self.position) / self.rate

    def describe(self) -> str:
        done = f"{self.position:,} of {self.head:,} events"
        if not self.running:
            return f"interrupted at {done}: `pm-ops projections rebuild {self.name}` resumes it"
        if self.rate is None or self.eta_seconds is None:
            return f"rebuilding beside the live tables: {done}"
        return (
            f"rebuilding beside the live tables: {done}, {self.rate:,.0f} events/s, "
            f"about {_duration(self.eta_seconds)} left"
        )


def rebuilds(app: Any, views: ViewsMixin) -> dict[str, RebuildStatus]:
    """Every rebuild begun and not yet swapped in or given up, by projection."""
    found = {}
    head = app.recorder.max_notification_id() or 0
    for name, record in views.rebuilds().items():
        position = views.position(rebuild_key(name))
        running = is_running(views, name)
        seconds = time.time() - record.started_at
        done = position - record.started_from
        rate = done / seconds if running and done > 0 and seconds > 0 else None
        found[name] = RebuildStatus(name, position, max(head, position), running, rate)
    return found


def rebuild_running(views: ViewsMixin, name: str) -> bool:
    """Whether a rebuild of projection `name` is in progress (one row read, and its
    lock tried only if there is a rebuild on record)."""
    return name in views.rebuilds() and is_running(views, name)


def rebuild_lock(store: Store, name: str) -> RunnerLock:
    """The lock a rebuild of projection `name` holds (a runner's lock of its own name)."""
    return make_lock(store, f"{name}-rebuild")


def is_running(views: ViewsMixin, name: str) -> bool:
    """Whether a process holds the lock of a rebuild of projection `name`."""
    lock = rebuild_lock(views.store, name)
    if lock.try_acquire():
        lock.release()
        return False
    return True


def upgrade(live: TableProjection) -> None:
    """The rebuild of tables of an earlier layout, by whoever holds the projection's
    lock (its runner, `projections run --once`): no runner to ask to stand by. The old
    tables stand still meanwhile (nothing of this release can write them); readers keep
    reading them, and are told a rebuild is in progress."""
    log.info(
        "projection %s: tables are version %s, this release uses version %s: "
        "rebuilding from the log beside them",
        live.name,
        live.stored_version(),
        live.version,
    )
    BlueGreen(live).run(stand_by_seconds=None)


class BlueGreen:
    """One rebuild of one projection beside its live tables (`live`, as readers have it)."""

    def __init__(
        self,
        live: TableProjection,
        *,
        check: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.live = live
        self.name = live.name
        self.store = live.views.store
        self.views = open_views(
            live.app, self.store, Beside(live.name, frozenset(live.table_names))
        )
        self.new = live.beside(self.views)
        self.check = check  # False: --accept-current-log
        self.progress = progress
        self.lock = rebuild_lock(self.store, self.name)
        self._standing_by = False

    def run(self, *, stand_by_seconds: float | None) -> int | None:
        """Build, hand over, swap; returns the position swapped in (None if the runner
        doing it was stopped first). `stand_by_seconds`: how long to wait for the live
        runner to stand by; None when the caller holds the projection's lock."""
        if not self.lock.try_acquire():
            raise RebuildRunning(
                f"a rebuild of the {self.name} projection is already running; "
                "`pm-ops projections status` shows how far it has got"
            )
        try:
            self._prepare()
            try:
                self._build()
                self._check(whole=True)  # the live runner still following meanwhile
                self._analyze()
                position = self._hand_over(stand_by_seconds)
            except (LogAltered, Unstorable):
                self._discard()
                raise
            except _Interrupted:
                log.info("projection %s: rebuild stopped; the next one resumes it", self.name)
                return None
            try:
                self._retire()
            except Exception as error:  # swapped in all the same; the next rebuild drops them
                log.warning("projection %s: could not drop the old tables (%s)", self.name, error)
            return position
        finally:
            self.lock.release()

    # --- building beside the live tables --------------------------------------------

    def _prepare(self) -> None:
        """New tables, or those an interrupted rebuild of this layout left, to resume."""
        self.views.create_views([])
        self._retire()  # a swap whose drop did not happen
        if self._resumable():
            self.new.create()
            log.info(
                "projection %s: resuming the rebuild from position %s",
                self.name,
                self.new.position(),
            )
        else:
            self.new.reset()
        for table in self.new.table_names:
            self.views.name_implicit_indexes(table)
        self.live.views.record_rebuild(self.name, self.new.position())
        self.new.report_rebuild_to(self.new.head())

    def _resumable(self) -> bool:
        if self.views.stored_version(self.name) != self.new.version:
            return False
        with self.views.read() as cursor:
            wanted = [self.views.named(t) for t in self.new.table_names]
            return self.views.existing_tables(cursor, wanted) == set(wanted)

    def _build(self) -> None:
        """The log into the new tables, pass after pass (the API keeps appending), until
        a pass has had little to do: the hand-over takes the rest."""
        while True:
            head = self.new.head()
            left = head - self.new.position()
            if left > 0:
                self._pass(head)
            if left <= NEAR_ENOUGH:
                return

    def _pass(self, head: int) -> None:
        """The log into the new tables up to `head`."""
        self.new.catch_up(
            batch=REBUILD_BATCH,
            head=head,
            on_batch=lambda at: self._on_batch(at, head),
        )

    def _on_batch(self, position: int, head: int) -> None:
        if self.live.interrupted:
            raise _Interrupted
        self._check(whole=False)
        if self.progress is not None:
            self.progress(position, head)
        if self._standing_by:
            self.live.views.pause(self.name, STAND_BY_SECONDS)

    def _check(self, *, whole: bool) -> None:
        if self.check:
            self.new.check_beside(self.live, whole=whole)

    def _analyze(self) -> None:
        """PostgreSQL plans queries on new tables from their statistics: gather them
        before readers meet the tables (autovacuum would only do it later)."""
        if self.views.is_postgres:
            with self.views.write() as cursor:
                for table in self.new.tables():
                    cursor.execute(f"ANALYZE {table}")

    # --- the hand-over and the swap --------------------------------------------------

    def _hand_over(self, stand_by_seconds: float | None) -> int:
        if stand_by_seconds is None:
            return self._catch_up_and_swap()
        live_lock = make_lock(self.store, self.name)
        self._standing_by = True
        self.live.views.pause(self.name, STAND_BY_SECONDS)
        try:
            deadline = time.monotonic() + stand_by_seconds
            while not live_lock.try_acquire():
                if time.monotonic() > deadline:
                    raise HandOverTimeout(
                        f"the active {self.name} runner did not stand by within "
                        f"{stand_by_seconds:.0f}s; the rebuilt tables are kept, and running "
                        "the rebuild again swaps them in"
                    )
                self.live.views.pause(self.name, STAND_BY_SECONDS)
                time.sleep(0.2)
            try:
                return self._catch_up_and_swap()
            finally:
                live_lock.release()
        finally:
            self._standing_by = False
            self.live.views.resume(self.name)

    def _catch_up_and_swap(self) -> int:
        """With the live tables standing still: the events up to the head (so never
        behind what readers saw), the last check, the swap."""
        self._pass(self.new.head())
        self._check(whole=True)
        self._wait_for_older_readers()
        return self._swap()

    def _wait_for_older_readers(self) -> None:
        """PostgreSQL resolves a table's name when a statement starts, but reads it with
        its transaction's snapshot: a reader whose snapshot is older than the new tables'
        last batch, meeting them first after the swap, would miss that batch. Such
        readers are moments old; wait for them a little (SQLite snapshots the schema too).
        A reader of ours has locked a table of our schema with its first statement."""
        if not self.views.is_postgres:
            return
        with self.views.read() as cursor:
            cursor.execute("SELECT now() AS since")
            since = cursor.fetchone()["since"]
        deadline = time.monotonic() + OLDER_READERS_SECONDS
        while time.monotonic() < deadline:
            with self.views.read() as cursor:
                cursor.execute(OLDER_READERS, (self.store.schema, since))
                if cursor.fetchone()["older"] == 0:
                    return
            time.sleep(0.01)

    def _swap(self) -> int:
        """The swap, tried again while readers keep its locks (each try holds them up
        for at most LOCK_TIMEOUT_MS)."""
        deadline = time.monotonic() + SWAP_PATIENCE
        while True:
            try:
                position, locked = self._swap_once()
            except Exception as error:
                if not _busy(error) or time.monotonic() > deadline:
                    raise
                if self._standing_by:
                    self.live.views.pause(self.name, STAND_BY_SECONDS)
                time.sleep(0.05)
                continue
            log.info(
                "projection %s: rebuilt tables swapped in at position %s "
                "(its tables were locked for %.1f ms)",
                self.name,
                position,
                (time.monotonic() - locked) * 1000,
            )
            return position

    def _swap_once(self) -> tuple[int, float]:
        """One transaction: the live tables renamed away, the new ones renamed in, the
        position and the layout handed over. Returns the position and when the tables
        were locked (from then on readers wait on PostgreSQL, writers on SQLite)."""
        views, names = self.live.views, self.new.table_names
        position = self.new.position()
        with views.write(reads_first=True) as cursor:
            if views.is_postgres:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                ddl = advisory_key("ddl", str(self.store.schema))  # as create_views takes
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ddl,))
            live = sorted(views.existing_tables(cursor, names))  # a new layout may add some
            if views.is_postgres:
                tables = [self.store.table(t) for t in live] + self.new.tables()
                cursor.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            locked = time.monotonic()
            for table in live:
                cursor.execute(f"ALTER TABLE {self.store.table(table)} RENAME TO {table}{RETIRED}")
            for table in names:
                cursor.execute(f"ALTER TABLE {self.store.table(table + BESIDE)} RENAME TO {table}")
            views.hand_over(cursor, self.name, position, self.new.version)
        return position, locked

    # --- after -----------------------------------------------------------------------

    def _retire(self) -> None:
        """Drop the tables a swap replaced (their names come free for the next one)."""
        self._drop([self.store.table(t + RETIRED) for t in self.live.table_names])

    def _discard(self) -> None:
        """A rebuild that failed for good leaves nothing behind."""
        try:
            self._drop(self.new.tables())
            with self.live.views.write() as cursor:
                self.live.views.forget_rebuild(cursor, self.name)
        except Exception as error:  # the failure being reported matters more
            log.warning("projection %s: could not drop the rebuild's tables (%s)", self.name, error)

    def _drop(self, tables: list[str]) -> None:
        with self.live.views.write(reads_first=True) as cursor:
            for table in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")


def _busy(error: BaseException) -> bool:
    """A swap that could not have its locks in time (readers, another writer): try again."""
    cause = error.__cause__ if error.__cause__ is not None else error
    if isinstance(cause, psycopg.errors.LockNotAvailable | psycopg.errors.DeadlockDetected):
        return True
    return isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
