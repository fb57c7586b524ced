"""Replaying the log in plain Python: the read models' derivations, straight from the
events (for `state --as-of`, the console's person page and `verify`, which compares
them with what the SQL projections stored).

Each read model's derivation lives beside its SQL (state.py `StateModel`, audit.py
`AuditModel`, activity.py `ActivityModel`); this module only walks the log for them."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from eventsourcing.postgres import PostgresApplicationRecorder

from commands.library_internals import note_decoder
from projections.log import read_ahead, read_log


class Model(Protocol):
    """A read model's plain-Python derivation, fed one event at a time in log order."""

    topics: frozenset[str]

    def apply(self, position: int, event: Any) -> None: ...


@dataclass
class Replayed:
    """How far a replay went, and what it could not read."""

    position: int = 0
    undecodable: list[tuple[int, str]] = field(default_factory=list)


def replay(
    app: Any,
    models: Sequence[Model],
    *,
    stop: int | None = None,
    until: datetime | None = None,
    batch: int = 5000,
) -> Replayed:
    """Feed `models` the log in order up to position `stop` (inclusive; default the head
    now) and/or up to the instant `until` (events recorded after it are left out). An
    event that cannot be decoded, or lacks what its type must carry, is reported, not
    raised: a corrupted record must not hide the rest."""
    head = app.recorder.max_notification_id() or 0
    replayed = Replayed(position=head if stop is None else min(stop, head))
    decode = note_decoder(app.mapper)  # it decodes log.read_log's light rows
    topics = sorted(frozenset().union(*(model.topics for model in models)))
    for note in notifications(app, stop=replayed.position, batch=batch, topics=topics):
        try:
            event = decode(note)
            if until is not None and event.timestamp > until:
                continue
            for model in models:
                if note.topic in model.topics:
                    model.apply(note.id, event)
        except Exception as error:  # reported with its position by verify
            replayed.undecodable.append((note.id, f"{type(error).__name__}: {error}"))
    return replayed


def notifications(
    app: Any,
    *,
    start: int = 1,
    stop: int | None = None,
    batch: int = 5000,
    topics: Sequence[str] = (),
) -> Iterator[Any]:
    """Every notification (of `topics`, if given) from `start` to `stop` (inclusive;
    default the head now), in log order, read a window of `batch` positions at a
    time (see TableProjection.read for why a window, not a count), the next
    window while the caller works on this one (PostgreSQL)."""
    if stop is None:
        stop = app.recorder.max_notification_id() or 0
    windows = [(first, min(stop, first + batch - 1)) for first in range(start, stop + 1, batch)]

    def fetch(window: tuple[int, int]) -> Sequence[Any]:
        return read_log(app.recorder, window[0], window[1], topics)

    postgres = isinstance(app.recorder, PostgresApplicationRecorder)
    for notes in read_ahead(fetch, windows, thread=postgres):
        yield from notes
