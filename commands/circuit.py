"""Fail fast while PostgreSQL is unreachable, and notice quickly when it is back.

The eventsourcing recorder retries a failed connection ten times (0.2 s apart, on
top of each wait for the pool), so without help one request takes many seconds to
learn the store is gone. The circuit sits in front of the datastore's connections:

- closed: connections are handed out as usual. The first time one cannot be had
  within ACQUIRE_SECONDS (the server refuses, or does not answer), it opens.
- open: every request is refused at once with `StoreUnreachable` (a 503), and a
  probe thread tries a new connection every PROBE_SECONDS; the first that works,
  with one from the pool after it, closes the circuit.

A pooled connection that breaks under a statement asks a new connection whether the
store is gone or only that connection is. Gone: the circuit opens then and there, so
the request does not try the pool's other broken connections one by one, 0.2 s apart
(the first call after PostgreSQL stopped took 1-2 s). Only that connection (a server
restart, a terminated backend): the pool drops every broken one, the recorder's retry
takes a sound one, and the circuit stays closed. A healthy call pays nothing for this.
The pool's own reconnection backs off exponentially up to its reconnect timeout;
that is cut to RECONNECT_SECONDS so it starts afresh soon after the store returns.

The circuit hands connections out itself (`Checkout`), doing what the datastore's
get_connection does (eventsourcing 9.5.6: open the pool, register its composite types,
raise psycopg's errors as its own) without three generator context managers on every
read and write. Those are the library's internals, reached through
commands/library_internals.py; its contract tests compare the two on an upgrade.

A connection given back idle, outside a transaction, is kept on the circuit's own idle
list and handed out again from there (the last one back, first out): the pool's
getconn and putconn, with their locks and checks, were a tenth of a replay's CPU. Any
connection the circuit keeps is one a checkout can take, so the pool's size still
bounds them all; one left in a transaction, or broken, goes back to the pool, which
rolls it back or drops it. When a connection breaks, or the circuit closes, the idle
list is handed back to the pool first, so the pool's check sees every connection."""

import logging
import threading
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError
from psycopg.pq import TransactionStatus

from commands.library_internals import (
    GetConnection,
    connection_pool,
    install_connection_checkout,
    persistence_error,
    pooled_connection,
    return_connection,
)

log = logging.getLogger(__name__)

ACQUIRE_SECONDS = 0.5  # wait for a pooled connection before calling the store unreachable
PROBE_SECONDS = 0.25
RECONNECT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 2  # libpq's minimum
STATEMENT_TIMEOUT_MS = 15_000  # above the recorder's 10 s lock timeout: a safety net only
IDLE = TransactionStatus.IDLE


class StoreUnreachable(PersistenceError):
    """The circuit is open: refused without trying (not retried by the recorder)."""


class Circuit:
    def __init__(self, datastore: Any) -> None:
        self._datastore = datastore
        self._open = threading.Event()
        self._lock = threading.Lock()
        # list.append and list.pop are atomic: no lock is needed to share it.
        self._idle: list[Any] = []
        # From now on the recorders take their connections from the circuit; the
        # library's own get_connection is kept for the probe.
        self._get_connection: GetConnection = install_connection_checkout(
            datastore, self.connection
        )

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def connection(self) -> "Checkout":
        """A connection as the datastore's get_connection gives one, refused at once
        while the circuit is open."""
        return Checkout(self)

    def getconn(self) -> Any:
        """A pooled connection with the library's composite types registered, as the
        datastore's get_connection prepares it (raises psycopg's errors)."""
        try:
            return self._idle.pop()
        except IndexError:
            return pooled_connection(self._datastore)

    def putconn(self, conn: Any) -> None:
        if conn.pgconn.transaction_status == IDLE and not self._open.is_set():
            self._idle.append(conn)
        else:
            return_connection(self._datastore, conn)

    def _give_back_idle(self) -> None:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            return_connection(self._datastore, conn)

    def close(self) -> None:
        """Hand the idle connections back, for the pool to close with the datastore."""
        self._give_back_idle()

    def _trip(self, error: BaseException) -> None:
        with self._lock:
            if self._open.is_set():
                return
            self._open.set()
        self._give_back_idle()
        log.warning("store unreachable (%s): refusing at once until it answers", error)
        threading.Thread(target=self._probe, name="pm-ops-store-probe", daemon=True).start()

    def stale(self, error: psycopg.Error) -> PersistenceError:
        """What to raise for a pooled connection that broke under a statement: a
        StoreUnreachable (not retried) if the store refuses a new connection, else the
        library's error (retried), once the pool has dropped its other broken ones."""
        self._give_back_idle()  # the pool's check, or the outage, sees them too
        refusal = self._refusal()
        if refusal is None:
            self._datastore.pool.check()
            return persistence_error(error)
        self._trip(refusal)
        return StoreUnreachable("the store is unreachable; retrying in the background")

    def _refusal(self) -> psycopg.Error | None:
        """Why the store refuses a new connection, or None when it takes one. A new
        one, not the pool's: those may be connections the store already dropped."""
        pool = self._datastore.pool
        try:
            psycopg.connect(pool.conninfo, **pool.kwargs).close()
        except psycopg.Error as error:
            return error
        return None

    def _probe(self) -> None:
        while not self._pool_answers():
            threading.Event().wait(PROBE_SECONDS)
        self._open.clear()
        log.warning("store reachable again")

    def _pool_answers(self) -> bool:
        """The store takes a new connection, then the pool, rid of the connections the
        outage broke, hands out one that answers (the pool is not touched before)."""
        if self._refusal() is not None:
            return False
        self._datastore.pool.check()
        try:
            with self._get_connection() as conn:
                conn.execute("SELECT 1")
        except (PersistenceError, OSError):
            return False
        return True


def install(datastore: Any) -> Circuit:
    """Put a circuit in front of an eventsourcing PostgresDatastore, with short timeouts."""
    pool = connection_pool(datastore)
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
    return Circuit(datastore)


class Checkout:
    """The context of one connection: the circuit's check, the pool's getconn and
    putconn, psycopg's errors raised as the library's. A class, not the three generator
    context managers it stands for (circuit, datastore, pool: 25 µs a checkout against
    the pool's own 6 µs, on every read and every write). The pool's connections are in
    autocommit (the datastore sets it), so nothing is left to commit on the way out;
    one returned inside a transaction is rolled back by the pool."""

    __slots__ = ("_circuit", "_conn")

    def __init__(self, circuit: Circuit) -> None:
        self._circuit = circuit
        self._conn: Any = None

    def __enter__(self) -> Any:
        circuit = self._circuit
        if circuit.is_open:
            raise StoreUnreachable("the store is unreachable; retrying in the background")
        try:
            self._conn = circuit.getconn()
        except psycopg.Error as error:
            translated = persistence_error(error)
            if isinstance(translated, OperationalError | InterfaceError):
                circuit._trip(translated)
            raise translated from error
        return self._conn

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        conn, self._conn = self._conn, None
        if not isinstance(error, psycopg.Error):
            self._circuit.putconn(conn)
            return
        broken = conn.broken  # read before the pool has it: the pool closes a broken one
        self._circuit.putconn(conn)
        raise (self._circuit.stale(error) if broken else persistence_error(error)) from error
