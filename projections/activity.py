"""The activity read model: one row per call that reached the service after
authentication (a delivery record or a rejected call), for the console's
calls-per-hour chart and its list of refused calls.

Outcomes are the ones an auditor reads: `changed` (something was written),
`no-op` (already so; nothing written) and `refused` (a 4xx the caller must fix).
Idempotent replays leave no record in the log, so they are not counted here.
`ActivityModel` derives the same rows in plain Python, for `verify`.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.utils import get_topic

from aggregates import Community, Delivery, EmailIndex, Person, RejectedCall, Token
from aggregates.values import printable
from commands.operations import OPERATIONS
from projections.handled import check_handled
from projections.projection import TableProjection
from projections.store import ViewsMixin
from projections.times import iso

OUTCOMES = ("changed", "no-op", "refused")
DIMENSIONS = ("outcome", "workflow", "actor")
# The outcomes that wrote a change, as each operation declares them.
CHANGED = frozenset(
    name for op in OPERATIONS for name, outcome in op.outcomes.items() if outcome.changed
)
ACTIVITY_COLUMNS = (
    "position",
    "at",
    "hour",
    "operation",
    "outcome",
    "status",
    "code",
    "detail",
    "person_id",
    "actor",
    "token",
    "workflow",
    "idempotency_key",
    "request_id",
    "source_address",
)


def hour_of(moment: datetime) -> str:
    """The hour bucket an instant falls in, as fixed-width UTC text (sorts as time)."""
    return iso(moment)[:13] + ":00Z"


def _document(body: str) -> dict[str, Any]:
    try:
        document = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


Facts = tuple[str, str | None, str | None, int | None]  # outcome, code, detail, person id


def _delivery_facts(event: Any) -> Facts:
    """outcome, error code, error detail and person id of a delivery record."""
    document = _document(event.body)
    if event.status != 200:
        errors = document.get("errors") or [{}]
        return "refused", event.outcome, errors[0].get("detail"), None
    attributes = (document.get("data") or {}).get("attributes") or {}
    person = attributes.get("personId")
    outcome = "changed" if event.outcome in CHANGED else "no-op"
    return outcome, None, None, person if isinstance(person, int) else None


def _rejection_facts(event: Any) -> Facts:
    return "refused", event.code, event.detail, None


MEANINGS: dict[type, Callable[[Any], Facts]] = {
    Delivery.Recorded: _delivery_facts,
    RejectedCall.Recorded: _rejection_facts,
}
LEAVES_ALONE = (Community, EmailIndex, Person, Token)
TOPICS = frozenset(get_topic(event) for event in MEANINGS)


def check() -> None:
    check_handled("activity", MEANINGS, LEAVES_ALONE)


class ActivityProjection(TableProjection):
    """Calls by hour, outcome, workflow and actor; refused calls with their detail."""

    name = "activity"
    topics = TOPICS
    table_names = ("ops_activity",)

    def check(self) -> None:
        check()

    def ddl(self) -> list[str]:
        table = self.t("ops_activity")
        return [
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "position BIGINT PRIMARY KEY, at TEXT NOT NULL, hour TEXT NOT NULL, "
            "operation TEXT NOT NULL, outcome TEXT NOT NULL, status INTEGER NOT NULL, "
            "code TEXT, detail TEXT, person_id BIGINT, actor TEXT, token TEXT, workflow TEXT, "
            "idempotency_key TEXT, request_id TEXT, source_address TEXT)",
            f"CREATE INDEX IF NOT EXISTS {self.index('ops_activity_hour', 'ops_activity')} "
            f"ON {table} (hour)",
        ]

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        table = self.t("ops_activity")
        self.views.execute_rows(
            cursor,
            f"INSERT INTO {table} ({', '.join(ACTIVITY_COLUMNS)}) "
            f"SELECT {', '.join(ACTIVITY_COLUMNS)} FROM {{rows}} "
            "WHERE true ON CONFLICT (position) DO NOTHING",
            ACTIVITY_TYPES,
            [_row(position, event) for position, event in events],
        )


NOT_TEXT = {"position": "bigint", "person_id": "bigint", "status": "integer"}
ACTIVITY_TYPES = tuple((column, NOT_TEXT.get(column, "text")) for column in ACTIVITY_COLUMNS)


def _row(position: int, event: Any) -> tuple[Any, ...]:
    """A delivery record's or a rejected call's row, as ACTIVITY_COLUMNS."""
    outcome, code, detail, person = MEANINGS[type(event)](event)
    if detail is not None:
        detail = printable(detail)  # an earlier release quoted values back raw (a NUL, say)
    meta: dict[str, Any] = getattr(event, "meta", None) or {}
    return (
        position,
        iso(event.timestamp),
        hour_of(event.timestamp),
        event.operation,
        outcome,
        event.status,
        code,
        detail,
        person,
        meta.get("actor"),
        meta.get("token"),
        meta.get("workflow"),
        meta.get("idempotency_key"),
        meta.get("request_id"),
        meta.get("source_address"),
    )


@dataclass
class ActivityModel:
    """The rows derived event by event, in plain Python (for `verify`)."""

    topics: frozenset[str] = TOPICS
    rows: dict[int, tuple[Any, ...]] = field(default_factory=dict)

    def apply(self, position: int, event: Any) -> None:
        self.rows[position] = _row(position, event)


# --- queries -------------------------------------------------------------------


def stored_rows(views: ViewsMixin, cursor: Any) -> dict[int, tuple[Any, ...]]:
    """Every row of the activity table, by position (for `verify`)."""
    views.execute(
        cursor,
        f"SELECT {', '.join(ACTIVITY_COLUMNS)} FROM {views.table('ops_activity')} "
        "ORDER BY position",
    )
    return {r["position"]: tuple(r[c] for c in ACTIVITY_COLUMNS) for r in cursor.fetchall()}


@dataclass(frozen=True)
class HourlyCount:
    hour: str
    outcome: str
    group: str | None  # the workflow or actor (None: none was given); the outcome itself
    calls: int


def hourly_counts(views: ViewsMixin, since: datetime, dimension: str) -> list[HourlyCount]:
    """Calls per hour from `since` on, by outcome and by one dimension."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}")
    column = dimension  # checked against DIMENSIONS: safe to name in SQL
    with views.read() as cursor:
        views.execute(
            cursor,
            f"SELECT hour, outcome, {column} AS grp, COUNT(*) AS calls "
            f"FROM {views.table('ops_activity')} WHERE hour >= %s "
            f"GROUP BY hour, outcome, {column} ORDER BY hour",
            (hour_of(since),),
        )
        rows: Sequence[Any] = cursor.fetchall()
    return [HourlyCount(r["hour"], r["outcome"], r["grp"], int(r["calls"])) for r in rows]


def refused_calls(views: ViewsMixin, since: datetime, limit: int = 100) -> list[dict[str, Any]]:
    """The latest refused calls since `since`, newest first, with their detail."""
    with views.read() as cursor:
        views.execute(
            cursor,
            f"SELECT {', '.join(ACTIVITY_COLUMNS)} FROM {views.table('ops_activity')} "
            "WHERE outcome = 'refused' AND hour >= %s ORDER BY position DESC LIMIT %s",
            (hour_of(since), limit),
        )
        return [{c: r[c] for c in ACTIVITY_COLUMNS} for r in cursor.fetchall()]
