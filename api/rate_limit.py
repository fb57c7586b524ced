"""Per-token, per-minute request counts in the shared store, so the limit holds
across every worker and machine (process memory would multiply it).

Like the write path, counting is grouped: request threads queue their hit, and one
thread adds up everything queued for a token in one UPSERT (hits + n RETURNING the
new total), so a burst costs one round trip rather than one transaction per request.
The total tells each queued hit its exact ordinal within the window."""

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

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
MAX_GROUP = 500

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
    done: threading.Event = field(default_factory=threading.Event)
    ordinal: int = 0
    error: BaseException | None = None


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

    def create_table(self) -> None:
        with self._datastore.transaction(commit=True) as cursor:
            cursor.execute(self._create_sql)

    def hit(self, token_id: UUID, limit: int, now: float | None = None) -> int | None:
        """Count one request. Returns None if allowed, else seconds until the window resets."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
        pending = _Hit(token_id.hex, window)
        self._ensure_started()
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        if pending.ordinal <= limit:
            return None
        return max(1, int(window + WINDOW_SECONDS - now + 0.999))

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
            # One autocommitted statement: no BEGIN/COMMIT round trips on the hot path.
            total = int(self._execute(self._hit_sql, (token, window, len(hits)))["hits"])
            for offset, pending in enumerate(hits):
                pending.ordinal = total - len(hits) + 1 + offset
            if total == len(hits):  # first hits of a window: forget windows long past
                self._execute(self._prune_sql, (window - 10 * WINDOW_SECONDS,), fetch=False)

    # A pooled connection broken by a server restart is discarded; the retry gets a fresh one.
    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.1)
    def _execute(self, sql: str, params: tuple[Any, ...], fetch: bool = True) -> Any:
        """Run one statement on a pooled connection in autocommit mode; its first row."""
        if isinstance(self._datastore, SQLiteDatastore):
            try:
                with self._datastore.get_connection(commit=True) as conn:
                    cursor = conn.cursor()
                    cursor.execute(sql, params)
                    return cursor.fetchone() if fetch else None
            except sqlite3.Error as error:  # the PostgreSQL datastore wraps these itself
                raise OperationalError(str(error)) from error
        with self._datastore.get_connection() as conn:  # autocommit: one round trip
            cursor = conn.execute(sql, params)
            return cursor.fetchone() if fetch else None
