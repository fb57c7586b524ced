"""Fail fast while PostgreSQL is unreachable, and notice quickly when it is back.

The eventsourcing recorder retries a failed connection ten times (0.2 s apart, on
top of each wait for the pool), so without help one request takes many seconds to
learn the store is gone. The circuit sits in front of the datastore's connections:

- closed: connections are handed out as usual. The first time one cannot be had
  within ACQUIRE_SECONDS (the server refuses, or does not answer), it opens.
- open: every request is refused at once with `StoreUnreachable` (a 503), and a
  probe thread tries a real connection every PROBE_SECONDS; the first that works
  closes the circuit.

A broken connection *in* the pool (after a server restart) does not open it: the
recorder's retry takes the next one, and the pool replaces the broken ones.
The pool's own reconnection backs off exponentially up to its reconnect timeout;
that is cut to RECONNECT_SECONDS so it starts afresh soon after the store returns."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError

log = logging.getLogger(__name__)

ACQUIRE_SECONDS = 0.5  # wait for a pooled connection before calling the store unreachable
PROBE_SECONDS = 0.25
RECONNECT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 2  # libpq's minimum
STATEMENT_TIMEOUT_MS = 15_000  # above the recorder's 10 s lock timeout: a safety net only


class StoreUnreachable(PersistenceError):
    """The circuit is open: refused without trying (not retried by the recorder)."""


GetConnection = Callable[[], AbstractContextManager[Any]]


class Circuit:
    def __init__(self, get_connection: GetConnection) -> None:
        self._get_connection = get_connection
        self._open = threading.Event()
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """The datastore's get_connection, refused at once while the circuit is open."""
        if self._open.is_set():
            raise StoreUnreachable("the store is unreachable; retrying in the background")
        acquired = False
        try:
            with self._get_connection() as conn:
                acquired = True
                yield conn
        except (OperationalError, InterfaceError) as error:
            if not acquired:
                self._trip(error)
            raise

    def _trip(self, error: BaseException) -> None:
        with self._lock:
            if self._open.is_set():
                return
            self._open.set()
        log.warning("store unreachable (%s): refusing at once until it answers", error)
        threading.Thread(target=self._probe, name="pm-ops-store-probe", daemon=True).start()

    def _probe(self) -> None:
        while True:
            try:
                with self._get_connection() as conn:
                    conn.execute("SELECT 1")
            except (PersistenceError, OSError):
                threading.Event().wait(PROBE_SECONDS)
                continue
            self._open.clear()
            log.warning("store reachable again")
            return


def install(datastore: Any) -> Circuit:
    """Put a circuit in front of an eventsourcing PostgresDatastore, with short timeouts."""
    pool = datastore.pool
    pool.timeout = ACQUIRE_SECONDS
    pool.reconnect_timeout = RECONNECT_SECONDS
    pool.kwargs.update(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        # A peer that vanished without closing (a dead host, a cut link) is noticed.
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=2,
    )
    circuit = Circuit(datastore.get_connection)
    datastore.get_connection = circuit.connection
    return circuit
