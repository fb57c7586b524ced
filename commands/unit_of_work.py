"""Aggregates loaded and created for one transaction (possibly many commands), and the
delivery records it made (as stored events, commands/fresh_events.py)."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from commands.bulk import EventRow, plain_state, read_stored, rebuild
from commands.fresh_events import DeliveryRecords
from commands.library_internals import event_store_of, mapper_of

A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True, slots=True)
class RecordedDelivery:
    """A delivery record made in this transaction: what a repeat of its call needs, and
    its one event, ready to store (a Delivery aggregate at version 1 once stored)."""

    id: UUID
    fingerprint: str
    status: int
    body: str
    row: EventRow

    @property
    def version(self) -> int:
        return self.row[1]


class UnitOfWork:
    def __init__(
        self,
        repository: Repository[Any],
        seed: dict[UUID, Aggregate | None] | None = None,
        deliveries: DeliveryRecords | None = None,
    ) -> None:
        self._repository = repository
        self._events = event_store_of(repository)
        self._aggregates: dict[UUID, Aggregate | None] = dict(seed or {})
        self._read: dict[UUID, list[StoredEvent]] = {}  # read together, rebuilt when used
        self._deliveries = deliveries
        self._recorded: dict[UUID, RecordedDelivery] = {}

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate as this transaction sees it, or None if it does not exist."""
        if aggregate_id not in self._aggregates and aggregate_id in self._read:
            stored = self._read.pop(aggregate_id)
            self._aggregates[aggregate_id] = rebuild(self._events, stored)
        if aggregate_id not in self._aggregates:
            try:
                self._aggregates[aggregate_id] = self._repository.get(aggregate_id)
            except AggregateNotFoundError:
                self._aggregates[aggregate_id] = None
        found = self._aggregates[aggregate_id]
        assert found is None or isinstance(found, cls), (cls, type(found))
        return found

    def read_many(self, aggregate_ids: Iterable[UUID]) -> None:
        """Read, in one query, those of these aggregates not read yet (a replay then
        rebuilds only its delivery record, never the person read beside it)."""
        missing = [i for i in aggregate_ids if i not in self._aggregates and i not in self._read]
        if missing:
            self._read.update(read_stored(self._events, missing))

    def created_state(self, aggregate_id: UUID) -> dict[str, Any] | None:
        """The plain attributes of the first event of an aggregate read_many() read and
        get() has not rebuilt (bulk.plain_state), or None if it does not exist: for an
        aggregate never changed after it is created, read without rebuilding it."""
        stored = self._read[aggregate_id]
        return plain_state(mapper_of(self._events), stored[0].state) if stored else None

    def add(self, aggregate: Aggregate) -> None:
        self._aggregates[aggregate.id] = aggregate

    def record_delivery(
        self, delivery_id: UUID, owner: UUID, status: int, meta: dict[str, Any], **texts: str
    ) -> None:
        """A new Delivery(owner, status, meta, key=, fingerprint=, operation=, body=,
        outcome=), stored with this transaction's events."""
        if self._deliveries is None:
            self._deliveries = DeliveryRecords(mapper_of(self._events))
        records = self._deliveries
        state = records.state(owner, status, meta, **texts)
        row = (delivery_id.bytes, records.version, records.topic, state)
        self._recorded[delivery_id] = RecordedDelivery(
            delivery_id, texts["fingerprint"], status, texts["body"], row
        )

    def recorded_delivery(self, delivery_id: UUID) -> RecordedDelivery | None:
        return self._recorded.get(delivery_id)

    def recorded_deliveries(self) -> list[RecordedDelivery]:
        return list(self._recorded.values())

    def loaded(self) -> dict[UUID, Aggregate | None]:
        for aggregate_id in list(self._read):
            self.get(Aggregate, aggregate_id)
        return dict(self._aggregates)

    def aggregates(self) -> list[Aggregate]:
        return [a for a in self._aggregates.values() if a is not None]
