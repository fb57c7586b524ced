"""Per-token, per-minute request counts in the shared store, so the limit holds
across every worker and machine (process memory would multiply it).

Every admitted call holds an ordinal within its token's window, and only ordinals up
to the limit are admitted, so the limit holds however many processes count. Ordinals
are taken from the store in blocks: one thread per process adds up what is queued for
a token, asks for that plus a spare lease in one UPSERT (hits + n RETURNING the new
total, which says which ordinals are this process's), and later calls are admitted from
the lease in memory, with no round trip. The lease is a small share of the limit
(0.5 %, at most 50; 1 below 400/min, so small limits are exact): ordinals a process
leased but did not use before the window ended are lost, so a token can be refused
early by at most (processes x (lease - 1)) calls a minute, never admitted once too often.
Once the store's total has passed the limit, the rest of the window is refused
without asking it again."""

import logging
import queue
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.utils import retry

from commands.library_internals import connection, sqlite_connection, transaction

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
MAX_GROUP = 500
LEASE_SHARE = 200  # a lease is 1/LEASE_SHARE of the limit ...
MAX_LEASE = 50  # ... and never more than this

_CREATE = """
CREATE {unlogged} TABLE IF NOT EXISTS {t} (
    token_id TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (token_id, window_start)
)"""
_HIT = """
INSERT INTO {t} AS counts (token_id, window_start, hits) VALUES ({p}, {p}, {p})
ON CONFLICT (token_id, window_start) DO UPDATE SET hits = counts.hits + excluded.hits
RETURNING hits"""
_PRUNE = "DELETE FROM {t} WHERE window_start < {p}"


@dataclass
class _Hit:
    token: str
    window: int
    limit: int
    done: threading.Event = field(default_factory=threading.Event)
    ordinal: int = 0
    error: BaseException | None = None


@dataclass
class _Lease:
    """Ordinals next..last of a token's window belong to this process; once the store's
    total has reached `spent_at`, any call under a limit up to that is over it."""

    next: int
    last: int
    spent_at: int | None = None

    def take(self, limit: int) -> int | None:
        """An ordinal for one call, or None if only the store can tell."""
        if self.next <= self.last:
            self.next += 1
            return self.next - 1
        if self.spent_at is not None and limit <= self.spent_at:
            return limit + 1
        return None


def lease_size(limit: int) -> int:
    return max(1, min(MAX_LEASE, limit // LEASE_SHARE))


class RateLimiter:
    def __init__(self, datastore: Any, *, table: str) -> None:
        # The eventsourcing recorder's datastore: one connection pool for everything.
        self._datastore = datastore
        sqlite = isinstance(datastore, SQLiteDatastore)
        placeholder = "?" if sqlite else "%s"
        # On PostgreSQL the counts need no WAL: a transaction that writes only an
        # UNLOGGED table commits without waiting for a flush. A server crash empties
        # the table, which forgives at most a minute's counts; commands are unaffected.
        self._create_sql = _CREATE.format(t=table, unlogged="" if sqlite else "UNLOGGED")
        self._hit_sql = _HIT.format(t=table, p=placeholder)
        self._prune_sql = _PRUNE.format(t=table, p=placeholder)
        self._queue: queue.SimpleQueue[_Hit] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, int], _Lease] = {}  # guarded by _leases_lock
        self._leases_lock = threading.Lock()

    def create_table(self) -> None:
        with transaction(self._datastore, commit=True) as cursor:
            cursor.execute(self._create_sql)

    def hit(self, token_id: UUID, limit: int, now: float | None = None) -> int | None:
        """Count one request. Returns None if allowed, else seconds until the window resets."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
        ordinal = self._from_lease(token_id.hex, window, limit)
        if ordinal is None:
            pending = _Hit(token_id.hex, window, limit)
            self._ensure_started()
            self._queue.put(pending)
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            ordinal = pending.ordinal
        if ordinal <= limit:
            return None
        return max(1, int(window + WINDOW_SECONDS - now + 0.999))

    def _from_lease(self, token: str, window: int, limit: int) -> int | None:
        """An ordinal this process already holds, or None to ask the store."""
        with self._leases_lock:
            lease = self._leases.get((token, window))
            return lease.take(limit) if lease is not None else None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="pm-ops-rate-limit", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_GROUP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._count(batch)
            except BaseException as error:  # every waiting request gets the error (503)
                log.warning("rate limit store unavailable: %s", type(error).__name__)
                for pending in batch:
                    pending.error = error
            for pending in batch:
                pending.done.set()

    def _count(self, batch: list[_Hit]) -> None:
        groups: dict[tuple[str, int], list[_Hit]] = defaultdict(list)
        for pending in batch:
            groups[(pending.token, pending.window)].append(pending)
        for (token, window), hits in groups.items():
            waiting = self._serve_from_lease(token, window, hits)
            if not waiting:
                continue
            wanted = len(waiting) + lease_size(waiting[0].limit) - 1
            # One autocommitted statement: no BEGIN/COMMIT round trips on the hot path.
            total = int(self._execute(self._hit_sql, (token, window, wanted))["hits"])
            lease = _Lease(total - wanted + 1, total, total if total >= hits[0].limit else None)
            for pending in waiting:
                pending.ordinal = lease.take(pending.limit) or pending.limit + 1
            self._keep(token, window, lease)
            if total == wanted:  # first hits of a window: forget windows long past
                self._execute(self._prune_sql, (window - 10 * WINDOW_SECONDS,), fetch=False)

    def _serve_from_lease(self, token: str, window: int, hits: list[_Hit]) -> list[_Hit]:
        """Give queued hits what the lease holds (another group may have refilled it
        meanwhile); returns those still waiting for the store."""
        with self._leases_lock:
            lease = self._leases.get((token, window))
            waiting = []
            for pending in hits:
                ordinal = lease.take(pending.limit) if lease is not None else None
                if ordinal is None:
                    waiting.append(pending)
                else:
                    pending.ordinal = ordinal
            return waiting

    def _keep(self, token: str, window: int, lease: _Lease) -> None:
        with self._leases_lock:
            for key in [key for key in self._leases if key[1] < window]:
                del self._leases[key]  # windows past
            self._leases[(token, window)] = lease

    # A pooled connection broken by a server restart is discarded; the retry gets a fresh one.
    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.1)
    def _execute(self, sql: str, params: tuple[Any, ...], fetch: bool = True) -> Any:
        """Run one statement on a pooled connection in autocommit mode; its first row."""
        if isinstance(self._datastore, SQLiteDatastore):
            try:
                with sqlite_connection(self._datastore, commit=True) as conn:
                    cursor = conn.cursor()
                    cursor.execute(sql, params)
                    return cursor.fetchone() if fetch else None
            except sqlite3.Error as error:  # the PostgreSQL datastore wraps these itself
                raise OperationalError(str(error)) from error
        with connection(self._datastore) as conn:  # autocommit: one round trip
            cursor = conn.execute(sql, params)
            return cursor.fetchone() if fetch else None
