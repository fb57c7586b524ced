"""Every read model and feed says what it does with each event the domain stores.

Each keeps a table from event type to what the event means to it (for an operation's
event, that entry follows from the operation's declaration in commands/operations.py)
and lists the aggregates or events it leaves alone. An event the domain stores that a
reader neither handles nor leaves alone is an error when the reader is built, at
start-up — never a silent default (a new event would otherwise be dropped, or worse,
mislabelled). The same check runs in the tests for every reader."""

import dataclasses
from collections.abc import Iterable
from functools import cache

from aggregates import domain_events


class Unhandled(Exception):
    """A reader does not say what it does with an event the domain stores."""


def check_handled(reader: str, handled: Iterable[type], ignored: Iterable[type]) -> None:
    """Raise Unhandled unless every domain event is handled or ignored by `reader`.
    `ignored` may name an aggregate class: all of its events are left alone."""
    _check(reader, frozenset(handled), frozenset(ignored), domain_events())


@cache
def _check(
    reader: str, handled: frozenset[type], ignored: frozenset[type], events: tuple[type, ...]
) -> None:
    missing = [
        event
        for event in events
        if event not in handled
        and event not in ignored
        and not any(event.__qualname__.startswith(f"{kind.__name__}.") for kind in ignored)
    ]
    if missing:
        names = ", ".join(event.__qualname__ for event in missing)
        raise Unhandled(
            f"the {reader} read model does not say what it does with {names}: add it to its "
            "table of events (or, for an operation's event, to the operation's declaration "
            "in commands/operations.py), or list it among the events it leaves alone"
        )


def require_attributes(reader: str, event: type, names: Iterable[str | None]) -> None:
    """An operation's declaration names attributes its event must have."""
    fields = {field.name for field in dataclasses.fields(event)}  # type: ignore[arg-type]
    for name in names:
        if name is not None and name not in fields:
            raise Unhandled(
                f"the {reader} read model is told to read {event.__qualname__}.{name}, "
                f"which that event does not have (it has {', '.join(sorted(fields))})"
            )
