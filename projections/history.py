"""A person's history, straight from the log (not from a projection): every event
of their aggregate in order, with who caused it and how."""

from dataclasses import dataclass
from typing import Any

from aggregates import Person
from commands.library_internals import event_positions
from projections.times import iso

# What an event carries that is not one of its values.
_NOT_VALUES = frozenset(
    {"originator_id", "originator_version", "timestamp", "meta", "originator_topic"}
)


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    at: str
    event: str
    values: tuple[tuple[str, Any], ...]  # the event's own attributes, in order
    actor: str | None
    token: str | None
    workflow: str | None
    idempotency_key: str | None
    request_id: str | None
    source_address: str | None

    @property
    def values_text(self) -> str:
        """`name='value', ...`: Python's repr, so None, '' and ' x' stay distinct."""
        return ", ".join(f"{name}={value!r}" for name, value in self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "at": self.at,
            "event": self.event,
            "values": self.values_text,
            "actor": self.actor,
            "token": self.token,
            "workflow": self.workflow,
            "idempotency_key": self.idempotency_key,
            "request_id": self.request_id,
            "source_address": self.source_address,
        }


HISTORY_COLUMNS = tuple(HistoryEntry.__dataclass_fields__)


class HistoryView:
    def __init__(self, app: Any) -> None:
        self.app = app

    def positions(self, person_id: int) -> dict[int, int]:
        """Where each of the person's events is in the log, by version (for proofs)."""
        return event_positions(self.app.recorder, Person.create_id(person_id))

    def person(self, person_id: int) -> list[HistoryEntry]:
        """Every event of one person, oldest first; empty if the log has no such person."""
        stored = self.app.recorder.select_events(Person.create_id(person_id))
        return [self._entry(self.app.mapper.to_domain_event(s)) for s in stored]

    @staticmethod
    def _entry(event: Any) -> HistoryEntry:
        meta = getattr(event, "meta", None) or {}
        return HistoryEntry(
            version=event.originator_version,
            at=iso(event.timestamp),
            event=type(event).__name__,
            values=tuple((k, v) for k, v in vars(event).items() if k not in _NOT_VALUES),
            actor=meta.get("actor"),
            token=meta.get("token"),
            workflow=meta.get("workflow"),
            idempotency_key=meta.get("idempotency_key"),
            request_id=meta.get("request_id"),
            source_address=meta.get("source_address"),
        )
