"""Following the log: one active runner per projection, the others stand by.

A runner polls the notification log in order (the library's ProjectionRunner
cannot follow SQLite). On PostgreSQL, once it has caught up, it LISTENs on the
events table's channel while it waits, but only as a wake-up: it polls anyway,
so a lost NOTIFY never stalls it. It listens only while it waits: a listening
connection is sent every write's NOTIFY (a server process woken and a message
parsed, per write and listener), which a busy runner has no use for.

The lock that makes a runner the active one is a PostgreSQL advisory lock held
by a dedicated connection, or on SQLite an flock() on a file beside the
database; both vanish with the process that held them, so a standby takes over
when the active runner dies.
"""

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql

from commands.application import OpsApplication
from commands.library_internals import application_notify_channel
from commands.store import Store
from projections.projection import Halted
from projections.store import advisory_key

log = logging.getLogger("pm_ops.projections")


class Follower(Protocol):
    name: str
    live_batch: int  # positions a batch covers while following the head
    gather_seconds: float  # how long to let events gather when less than a batch behind

    def create(self) -> None: ...

    def catch_up(self, *, max_batches: int | None = None) -> int: ...

    def position(self) -> int: ...

    def head(self) -> int: ...


class RunnerLock(Protocol):
    def try_acquire(self) -> bool: ...

    def healthy(self) -> bool: ...

    def wait_for_events(
        self, timeout: float, stop: threading.Event, arrived: Callable[[], bool]
    ) -> None: ...

    def release(self) -> None: ...


class PostgresLock:
    """pg_try_advisory_lock on a connection of its own (never the pool's), which
    also LISTENs for the events table's NOTIFY as a wake-up while its runner waits."""

    def __init__(self, store: Store, name: str) -> None:
        env = store.postgres_env()
        self._kwargs = {
            "dbname": env["POSTGRES_DBNAME"],
            "host": env["POSTGRES_HOST"],
            "port": env["POSTGRES_PORT"],
            "user": env["POSTGRES_USER"],
            "password": env["POSTGRES_PASSWORD"],
            "connect_timeout": 5,
            "autocommit": True,
            "application_name": f"pm-ops projection {name}",
            # The lock lives as long as this connection: if our host vanishes without
            # closing it, the server drops it (and the lock) within ~20 s, not hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
            "-c tcp_keepalives_count=2",
        }
        self._key = advisory_key("projection", str(store.schema), name)
        # The channel the application's recorder NOTIFYs on every write.
        self._channel = application_notify_channel(OpsApplication.name)
        self._conn: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(**self._kwargs)
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
            return bool(row and row[0])
        except psycopg.Error as error:
            log.warning("projection lock: PostgreSQL unreachable (%s)", type(error).__name__)
            self._close()
            return False

    def healthy(self) -> bool:
        try:
            return self._conn is not None and self._conn.execute("SELECT 1").fetchone() is not None
        except psycopg.Error:
            return False

    def wait_for_events(
        self, timeout: float, stop: threading.Event, arrived: Callable[[], bool]
    ) -> None:
        """Until a write's NOTIFY, at most `timeout`. `arrived` looks again once the
        LISTEN holds: a write between the runner's last look and it sent no NOTIFY here.
        The notifications that came before the UNLISTEN are read and dropped, so they
        neither pile up (psycopg keeps them) nor wake the next wait for nothing."""
        if self._conn is None:
            stop.wait(timeout)
            return
        channel = sql.Identifier(self._channel)
        try:
            self._conn.execute(sql.SQL("LISTEN {}").format(channel))
            try:
                if not arrived():
                    for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                        pass
            finally:
                self._conn.execute(sql.SQL("UNLISTEN {}").format(channel))
                for _ in self._conn.notifies(timeout=0):
                    pass
        except psycopg.Error:
            stop.wait(timeout)

    def release(self) -> None:
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


class FileLock:
    """flock() on `<database>.<projection>.lock`: exclusive across processes and
    across open files in one process, released by the kernel when the holder dies."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return True

    def healthy(self) -> bool:
        return self._fd is not None

    def wait_for_events(
        self, timeout: float, stop: threading.Event, arrived: Callable[[], bool]
    ) -> None:
        stop.wait(timeout)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def make_lock(store: Store, name: str) -> RunnerLock:
    if store.is_postgres:
        return PostgresLock(store, name)
    path = store.sqlite_path
    if store.is_memory:
        path = f"/tmp/pm-ops-memory-{os.getpid()}"  # noqa: S108 - only for throwaway stores
    return FileLock(Path(f"{path}.{name}.lock"))


class Runner:
    """Keeps one projection up to date while it holds the projection's lock."""

    def __init__(
        self,
        store: Store,
        follower: Follower,
        *,
        poll_seconds: float = 0.5,
        standby_seconds: float = 1.0,
        paused: Callable[[], bool] | None = None,
        on_lag: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.follower = follower
        self.name = follower.name
        self.poll_seconds = poll_seconds
        self.standby_seconds = standby_seconds
        self.paused = paused or (lambda: False)
        self.on_lag = on_lag
        self.stop_event = threading.Event()
        self.active = threading.Event()
        self.processed = 0
        self.halted_seconds = 2.0
        self._thread: threading.Thread | None = None

    def start(self) -> "Runner":
        self._thread = threading.Thread(
            target=self.run, name=f"pm-ops-projection-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        interrupt = getattr(self.follower, "interrupt", None)
        if interrupt is not None:
            interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        lock = make_lock(self.store, self.name)
        announced = False
        last_said = ""
        while not self.stop_event.is_set():
            if self._is_paused() or not lock.try_acquire():
                if not announced:
                    log.info("projection %s: standing by (another runner is active)", self.name)
                    announced = True
                self.stop_event.wait(self.standby_seconds)
                continue
            announced = False
            log.info("projection %s: active", self.name)
            self.active.set()
            try:
                activate = getattr(self.follower, "on_activate", None)
                if activate is not None:
                    activate()
                self._follow(lock)
            except Halted as halt:  # its message is whole: a traceback adds nothing
                said = f"projection {self.name}: {halt}"
                if said != last_said:  # once, not every retry
                    log.error("%s (`pm-ops projections status` shows it; retrying)", said)
                last_said = said
                self.stop_event.wait(self.halted_seconds)
            except Exception:
                log.exception("projection %s failed; retrying", self.name)
                self.stop_event.wait(2.0)
            finally:
                self.active.clear()
                lock.release()

    def _follow(self, lock: RunnerLock) -> None:
        while not self.stop_event.is_set():
            if self._is_paused():
                log.info("projection %s: handing over to a rebuild", self.name)
                return
            if not lock.healthy():
                log.warning("projection %s: lost its lock; standing by", self.name)
                return
            done = self.follower.catch_up(max_batches=20)
            self.processed += done
            behind = self._behind()
            if self.on_lag is not None and behind is not None:
                with contextlib.suppress(Exception):
                    self.on_lag(self.name, behind)
            if done == 0 and getattr(self.follower, "wakes_on_log", True):
                lock.wait_for_events(self.poll_seconds, self.stop_event, self._arrived)
            elif done == 0:
                self.stop_event.wait(self.poll_seconds)
            elif behind is not None and behind < self.follower.live_batch:
                # Near the head: let the next events gather into a fuller batch rather
                # than spin on a handful each (every batch is a transaction of its own,
                # beside the API's). A follower a batch or more behind goes straight on.
                self.stop_event.wait(self.follower.gather_seconds)

    def _arrived(self) -> bool:
        return bool(self._behind())

    def _behind(self) -> int | None:
        """Positions between the follower and its source's head (None: cannot tell now)."""
        try:
            return max(0, self.follower.head() - self.follower.position())
        except Exception:
            return None

    def _is_paused(self) -> bool:
        try:
            return self.paused()
        except Exception:
            return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
