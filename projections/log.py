"""Reading the event log fast, for the projections, their rebuilds and `verify`.

It does what the library's `select_notifications` does at a fraction of the cost,
which in a rebuild of the whole log was most of what was left: on PostgreSQL the rows
come as plain tuples (no dict, no dataclass, the originator id as text). The library's
`Mapper.to_domain_event` decodes them (the application's transcoder parses with
orjson: commands/transcoder.py); on SQLite the library reads them too. The events
table's layout, and the mapper's taking these rows, are the library's internals
(commands/library_internals.py).
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import args_row

from commands.library_internals import connection, datastore_of, notifications_statement
from commands.read_ahead import in_background

Window = TypeVar("Window")
Fetched = TypeVar("Fetched")


def read_ahead(
    fetch: Callable[[Window], Fetched], windows: Sequence[Window], *, thread: bool
) -> Iterator[Fetched]:
    """`fetch` of each window, in order. With `thread`, the next window is fetched
    in a helper thread while the caller works on this one, so the store's work
    (and the waiting for it) overlaps ours. Threads share one SQLite file less
    happily: callers pass thread=False there."""
    fetched = (fetch(window) for window in windows)
    return in_background(fetched) if thread and len(windows) > 1 else fetched


class Note(NamedTuple):
    """A stored event at its position (the library's Notification, lighter)."""

    id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


def read_log(recorder: Any, start: int, stop: int, topics: Sequence[str] = ()) -> Sequence[Any]:
    """The notifications from `start` to `stop` (both inclusive), in log order, only
    of `topics` if any are given. Callers keep the range to a batch: the query has
    no LIMIT, and a bounded range keeps PostgreSQL's plan cheap even without
    statistics (see TableProjection.read)."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        return recorder.select_notifications(
            start, max(stop - start + 1, 1), stop=stop, topics=list(topics)
        )
    statement = notifications_statement(recorder, topics=bool(topics))
    params: list[Any] = [start, stop]
    if topics:
        params.append(list(topics))
    with (
        connection(datastore_of(recorder)) as conn,
        conn.cursor(row_factory=args_row(Note), binary=True) as cursor,
    ):
        cursor.execute(statement, params, prepare=True)
        return cursor.fetchall()
