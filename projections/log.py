"""Reading the event log fast, for the projections, their rebuilds and `verify`.

Both do what the library does (`select_notifications`, `Mapper.to_domain_event`)
at a fraction of the cost, which in a rebuild of the whole log was most of what
was left: on PostgreSQL the rows come as plain tuples (no dict, no dataclass, the
originator id as text), and an event's JSON is parsed with orjson. Whatever the
fast path does not cover (another store, a cipher or compressor, upcasting, a
document orjson refuses) goes through the library as before.
"""

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import orjson
from eventsourcing.persistence import Mapper, find_id_convertor
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import resolve_topic
from psycopg.rows import args_row

from commands.transcoder import writes_library_json

Window = TypeVar("Window")
Fetched = TypeVar("Fetched")


def read_ahead(
    fetch: Callable[[Window], Fetched], windows: Sequence[Window], *, thread: bool
) -> Iterator[Fetched]:
    """`fetch` of each window, in order. With `thread`, the next window is fetched
    in a helper thread while the caller works on this one, so the store's work
    (and the waiting for it) overlaps ours. Threads share one SQLite file less
    happily: callers pass thread=False there."""
    if not thread or len(windows) < 2:
        yield from map(fetch, windows)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="pm-ops-read-ahead") as pool:
        ahead = pool.submit(fetch, windows[0])
        for window in windows[1:]:
            current = ahead.result()
            ahead = pool.submit(fetch, window)
            yield current
        yield ahead.result()


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
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    statement = (
        "SELECT notification_id, originator_id::text, originator_version, topic, state "
        f"FROM {table} WHERE notification_id >= %s AND notification_id <= %s"
    )
    params: list[Any] = [start, stop]
    if topics:
        statement += " AND topic = ANY(%s)"
        params.append(list(topics))
    statement += " ORDER BY notification_id"
    with (
        recorder.datastore.get_connection() as connection,
        connection.cursor(row_factory=args_row(Note), binary=True) as cursor,
    ):
        cursor.execute(statement, params, prepare=True)
        return cursor.fetchall()


class EventDecoder:
    """`mapper.to_domain_event`, with orjson in place of the library's json decoder
    when the mapper is the library's own JSON one without cipher or compressor."""

    def __init__(self, mapper: Any) -> None:
        self.mapper = mapper
        transcoder = getattr(mapper, "transcoder", None)
        self.fast = (
            type(mapper) is Mapper
            and writes_library_json(transcoder)
            and mapper.cipher is None
            and mapper.compressor is None
        )
        self.names = transcoder.names if self.fast else {}

    def __call__(self, note: Any) -> Any:
        if not self.fast:
            return self.mapper.to_domain_event(note)
        cls = resolve_topic(note.topic)
        try:
            state = self._load(note.state)
        except Exception:  # the library's decoder is the reference: it reads or reports it
            return self.mapper.to_domain_event(note)
        if type(state) is not dict or "class_version" in state:
            return self.mapper.to_domain_event(note)  # not ours to upcast
        if getattr(cls, "class_version", 1) != 1:
            return self.mapper.to_domain_event(note)
        convert = find_id_convertor(cls, type(note.originator_id))
        state["originator_id"] = convert(note.originator_id)
        state["originator_version"] = note.originator_version
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def _load(self, data: bytes) -> Any:
        """The document with its typed values revived. Typed values are nearly always
        only at the top (the timestamp, an id): counting their keys in the bytes
        tells when reviving those is all the object hook would have done."""
        state = orjson.loads(data)
        typed = data.count(b'"_type_"')
        if typed == 1 and type(state) is dict:  # most events: only their timestamp
            moment = state.get("timestamp")
            if type(moment) is dict and len(moment) == 2 and type(moment.get("_data_")) is str:
                state["timestamp"] = self.names[moment["_type_"]].decode(moment["_data_"])
                return state
        if typed and type(state) is dict:
            for key, item in state.items():
                if (
                    type(item) is dict
                    and len(item) == 2
                    and "_type_" in item
                    and type(item.get("_data_")) is str
                ):
                    state[key] = self.names[item["_type_"]].decode(item["_data_"])
                    typed -= 1
        return self._revive(state) if typed else state

    def _revive(self, value: Any) -> Any:
        """What the JSON transcoder's object hook does, bottom-up: each
        {"_type_": name, "_data_": data} becomes the registered type's value."""
        if type(value) is list:
            return [self._revive(item) if type(item) in (dict, list) else item for item in value]
        for key, item in value.items():
            if type(item) in (dict, list):
                value[key] = self._revive(item)
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            return self.names[value["_type_"]].decode(value["_data_"])
        return value
