"""The console's own tables in the shared store, and all of their SQL.

Sessions live here rather than in process memory so that every worker (and every
machine behind the load balancer) knows them. A session row is keyed by a hash of
the random session id: the id itself exists only in the browser's cookie. It holds
the token's id and version (never the token): any later event on the token, a
revocation or a rotation, ends the session.

The last `verify` runs are kept here too, so any worker can show their progress
and result.
"""

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson

from commands.library_internals import transaction
from commands.store import Store

IDLE_SECONDS = 12 * 3600
TOUCH_EVERY_SECONDS = 60  # last_seen is written at most once a minute per session
STALE_RUN_SECONDS = 15 * 60  # a run not heard of for this long died with its worker

_DDL = (
    "CREATE TABLE IF NOT EXISTS {sessions} ("
    "id_hash TEXT PRIMARY KEY, token_id TEXT NOT NULL, token_name TEXT NOT NULL, "
    "token_version BIGINT NOT NULL, csrf TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
    "last_seen DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {runs} ("
    "id TEXT PRIMARY KEY, started_at DOUBLE PRECISION NOT NULL, "
    "updated_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION, "
    "started_by TEXT NOT NULL, stage TEXT NOT NULL, ok INTEGER, result TEXT)",
)


@dataclass(frozen=True)
class Session:
    token_id: UUID
    token_name: str
    token_version: int
    csrf: str


@dataclass(frozen=True)
class VerifyRun:
    id: str
    started_at: float
    updated_at: float
    finished_at: float | None
    started_by: str
    stage: str
    ok: bool | None
    result: dict[str, Any]

    @property
    def running(self) -> bool:
        return self.finished_at is None and not self.interrupted

    @property
    def interrupted(self) -> bool:
        return self.finished_at is None and time.time() - self.updated_at > STALE_RUN_SECONDS


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleStore:
    def __init__(self, datastore: Any, store: Store) -> None:
        # The event store's own datastore: one connection pool for everything.
        self._datastore = datastore
        self._sessions = store.table("ops_console_sessions")
        self._runs = store.table("ops_console_verify_runs")
        self._placeholder = "%s" if store.is_postgres else "?"

    def _run(self, statement: str, params: tuple[Any, ...] = (), *, fetch: bool = False) -> Any:
        sql = statement.format(sessions=self._sessions, runs=self._runs, p=self._placeholder)
        with transaction(self._datastore, commit=not fetch) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if fetch else None

    def create_tables(self) -> None:
        for statement in _DDL:
            self._run(statement)

    # --- sessions -------------------------------------------------------------

    def open_session(self, token_id: UUID, token_name: str, token_version: int) -> str:
        """A new session; returns its id, to be given to the browser and kept nowhere else."""
        now = time.time()
        session_id = secrets.token_urlsafe(32)
        self._run("DELETE FROM {sessions} WHERE last_seen < {p}", (now - IDLE_SECONDS,))
        self._run(
            "INSERT INTO {sessions} (id_hash, token_id, token_name, token_version, csrf, "
            "created_at, last_seen) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
            (
                _hash(session_id),
                token_id.hex,
                token_name,
                token_version,
                secrets.token_urlsafe(32),
                now,
                now,
            ),
        )
        return session_id

    def session(self, session_id: str) -> Session | None:
        """The live session for this id (None if unknown or idle too long); marks it used."""
        now = time.time()
        rows = self._run(
            "SELECT token_id, token_name, token_version, csrf, last_seen FROM {sessions} "
            "WHERE id_hash = {p}",
            (_hash(session_id),),
            fetch=True,
        )
        if not rows:
            return None
        row = rows[0]
        if now - float(row["last_seen"]) > IDLE_SECONDS:
            self.close_session(session_id)
            return None
        if now - float(row["last_seen"]) > TOUCH_EVERY_SECONDS:
            self._run(
                "UPDATE {sessions} SET last_seen = {p} WHERE id_hash = {p}",
                (now, _hash(session_id)),
            )
        return Session(
            UUID(hex=row["token_id"]), row["token_name"], int(row["token_version"]), row["csrf"]
        )

    def close_session(self, session_id: str) -> None:
        self._run("DELETE FROM {sessions} WHERE id_hash = {p}", (_hash(session_id),))

    # --- verify runs ----------------------------------------------------------

    def start_run(self, started_by: str, stage: str) -> VerifyRun:
        now = time.time()
        run_id = uuid.uuid4().hex
        self._run(
            "INSERT INTO {runs} (id, started_at, updated_at, started_by, stage) "
            "VALUES ({p}, {p}, {p}, {p}, {p})",
            (run_id, now, now, started_by, stage),
        )
        found = self.run(run_id)
        assert found is not None
        return found

    def set_stage(self, run_id: str, stage: str) -> None:
        self._run(
            "UPDATE {runs} SET stage = {p}, updated_at = {p} WHERE id = {p}",
            (stage, time.time(), run_id),
        )

    def finish_run(self, run_id: str, ok: bool, result: dict[str, Any]) -> None:
        now = time.time()
        self._run(
            "UPDATE {runs} SET stage = {p}, ok = {p}, result = {p}, updated_at = {p}, "
            "finished_at = {p} WHERE id = {p}",
            ("finished", int(ok), orjson.dumps(result).decode(), now, now, run_id),
        )

    def run(self, run_id: str) -> VerifyRun | None:
        rows = self._run("SELECT * FROM {runs} WHERE id = {p}", (run_id,), fetch=True)
        return _verify_run(rows[0]) if rows else None

    def latest_run(self) -> VerifyRun | None:
        rows = self._run("SELECT * FROM {runs} ORDER BY started_at DESC LIMIT 1", fetch=True)
        return _verify_run(rows[0]) if rows else None

    def latest_finished_run(self) -> VerifyRun | None:
        rows = self._run(
            "SELECT * FROM {runs} WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
            fetch=True,
        )
        return _verify_run(rows[0]) if rows else None


def _verify_run(row: Any) -> VerifyRun:
    return VerifyRun(
        id=row["id"],
        started_at=float(row["started_at"]),
        updated_at=float(row["updated_at"]),
        finished_at=None if row["finished_at"] is None else float(row["finished_at"]),
        started_by=row["started_by"],
        stage=row["stage"],
        ok=None if row["ok"] is None else bool(row["ok"]),
        result=orjson.loads(row["result"]) if row["result"] else {},
    )
