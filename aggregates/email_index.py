from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from aggregates.ids import derived_id, derived_id_bytes
from aggregates.values import normalise_email


class EmailIndex(Aggregate):
    """Which people hold an email, answered from the log (the contentmanagement
    example's uuid5 index). More than one person means the email is ambiguous."""

    @staticmethod
    def create_id(email: str, **_: Any) -> UUID:
        return derived_id("email", normalise_email(email))

    @staticmethod
    def id_bytes(email: str) -> bytes:
        """create_id's 16 bytes (for bulk paths, which need no UUID object)."""
        return derived_id_bytes("email", normalise_email(email))

    @event("Created")
    def __init__(self, email: str) -> None:
        self.email = normalise_email(email)
        self.person_ids: list[int] = []

    def add(self, person_id: int) -> None:
        if person_id not in self.person_ids:
            self._indexed(person_id=person_id)

    def discard(self, person_id: int) -> None:
        if person_id in self.person_ids:
            self._unindexed(person_id=person_id)

    @event("PersonIndexed")
    def _indexed(self, person_id: int) -> None:
        self.person_ids.append(person_id)

    @event("PersonUnindexed")
    def _unindexed(self, person_id: int) -> None:
        self.person_ids.remove(person_id)
