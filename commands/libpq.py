"""Statements run through libpq directly, for the query every request makes and the
write every batch makes (commands/bulk.py `read_stored`, `write_events`).

psycopg's cursor adapts each parameter, builds a transformer for the result and drives
the socket from a Python generator: per request that cost more CPU than the round trip
it made. Here the statement is prepared once per connection and run with
`PGconn.exec_prepared` (psycopg's documented libpq wrapper, `psycopg.pq`), which
releases the GIL while it waits, with parameters already in PostgreSQL's text form and
the result in binary form, read cell by cell. A batch's COPY is sent with its opening
statements in one query. The connection is still a pooled psycopg connection in
autocommit mode: its pool, its state and its errors are psycopg's."""

import hashlib
import threading
import weakref
from functools import cache
from typing import Any

import psycopg
from psycopg import errors, generators, pq

IDLE = pq.TransactionStatus.IDLE

# SQLSTATEs: the session no longer has the statement (a reset), or has it already.
UNDEFINED_STATEMENT = b"26000"
DUPLICATE_STATEMENT = b"42P05"

_prepared: "weakref.WeakKeyDictionary[Any, set[bytes]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def execute_prepared(
    conn: psycopg.Connection[Any], statement: bytes, params: list[bytes]
) -> pq.abc.PGresult:
    """The binary result of `statement` (with $1, $2 … placeholders) on this connection,
    prepared on the connection's first use of it."""
    name = _name(statement)
    pgconn = conn.pgconn
    with _lock:
        names = _prepared.setdefault(conn, set())
    if name not in names:
        _prepare(pgconn, name, statement)
        names.add(name)
    result = pgconn.exec_prepared(name, params, result_format=1)
    if _sqlstate(result) == UNDEFINED_STATEMENT:  # the session was reset: prepare again
        _prepare(pgconn, name, statement)
        result = pgconn.exec_prepared(name, params, result_format=1)
    return _checked(pgconn, result)


def copy_in_transaction(conn: psycopg.Connection[Any], opening: bytes, payload: bytes) -> None:
    """One transaction: `opening` (statements sent as one query, the last a COPY …
    FROM STDIN), then the COPY's payload, then COMMIT: three round trips where psycopg's
    transaction, execute and copy objects made five, so the table lock an opening takes
    is held for less. Raises (and rolls back) as psycopg would."""
    pgconn = conn.pgconn
    try:
        result = pgconn.exec_(b"BEGIN; " + opening)
        if result.status != pq.ExecStatus.COPY_IN:
            _checked(pgconn, result)
            raise psycopg.ProgrammingError("the opening statements did not end in a COPY")
        pgconn.put_copy_data(payload)  # queued in libpq's buffer: the connection is nonblocking
        conn.wait(generators.copy_end(pgconn, None))  # flushes, waits without the GIL
        _checked(pgconn, pgconn.exec_(b"COMMIT"))
    except BaseException:
        if pgconn.status == pq.ConnStatus.OK and pgconn.transaction_status != IDLE:
            pgconn.exec_(b"ROLLBACK")
        raise


@cache
def _name(statement: bytes) -> bytes:
    return b"pmops_" + hashlib.sha1(statement, usedforsecurity=False).hexdigest()[:16].encode()


def _prepare(pgconn: pq.abc.PGconn, name: bytes, statement: bytes) -> None:
    result = pgconn.prepare(name, statement)
    if _sqlstate(result) != DUPLICATE_STATEMENT:
        _checked(pgconn, result)


def _sqlstate(result: pq.abc.PGresult) -> bytes | None:
    if result.status != pq.ExecStatus.FATAL_ERROR:
        return None
    return result.error_field(pq.DiagnosticField.SQLSTATE)


def _checked(pgconn: pq.abc.PGconn, result: pq.abc.PGresult) -> pq.abc.PGresult:
    """The result, or the error psycopg itself would raise for it."""
    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return result
    if pgconn.status != pq.ConnStatus.OK:  # the connection broke: the pool replaces it
        raise psycopg.OperationalError(pgconn.get_error_message())
    raise errors.error_from_result(result, encoding="utf-8")
