"""Per-token, per-minute request counts in the shared store, so the limit holds
across every worker and machine (process memory would multiply it)."""

import time
from typing import Any
from uuid import UUID

WINDOW_SECONDS = 60

_CREATE = """
CREATE TABLE IF NOT EXISTS {t} (
    token_id TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (token_id, window_start)
)"""
_HIT = """
INSERT INTO {t} AS counts (token_id, window_start, hits) VALUES ({p}, {p}, 1)
ON CONFLICT (token_id, window_start) DO UPDATE SET hits = counts.hits + 1
RETURNING hits"""
_PRUNE = "DELETE FROM {t} WHERE window_start < {p}"


class RateLimiter:
    def __init__(self, datastore: Any, *, table: str, placeholder: str) -> None:
        # The eventsourcing recorder's datastore: one connection pool for everything.
        self._datastore = datastore
        self._create_sql = _CREATE.format(t=table)
        self._hit_sql = _HIT.format(t=table, p=placeholder)
        self._prune_sql = _PRUNE.format(t=table, p=placeholder)

    def create_table(self) -> None:
        with self._datastore.transaction(commit=True) as cursor:
            cursor.execute(self._create_sql)

    def hit(self, token_id: UUID, limit: int, now: float | None = None) -> int | None:
        """Count one request. Returns None if allowed, else seconds until the window resets."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
        with self._datastore.transaction(commit=True) as cursor:
            cursor.execute(self._hit_sql, (token_id.hex, window))
            row = cursor.fetchone()
            hits = int(row["hits"])  # sqlite3.Row and psycopg's dict_row both key by name
            if hits == 1:  # first hit of a window: forget windows long past
                cursor.execute(self._prune_sql, (window - 10 * WINDOW_SECONDS,))
        if hits <= limit:
            return None
        return max(1, int(window + WINDOW_SECONDS - now + 0.999))
