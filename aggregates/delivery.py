from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from aggregates.ids import derived_id


class Delivery(Aggregate):
    """One call that reached the domain, under its idempotency key.

    Created in the same save() as the domain events it caused, so an
    acknowledged outcome and its effects are never apart. Its id is derived
    from the token owner and the key: a second execution cannot be stored.
    """

    @staticmethod
    def create_id(owner: UUID, key: str, **_: Any) -> UUID:
        return derived_id("delivery", owner, key)

    @event("Recorded")
    def __init__(
        self,
        owner: UUID,
        key: str,
        fingerprint: str,
        operation: str,
        status: int,
        body: str,
        outcome: str,
        meta: dict[str, Any],
    ) -> None:
        self.owner = owner
        self.key = key
        self.fingerprint = fingerprint
        self.operation = operation
        self.status = status
        self.body = body
        self.outcome = outcome


class RejectedCall(Aggregate):
    """An authenticated call refused before it reached the domain (403, 413,
    415, 422). Kept in the log so the feed shows a misbehaving workflow; not
    kept under the idempotency key, so a corrected retry runs normally."""

    @event("Recorded")
    def __init__(
        self,
        operation: str,
        status: int,
        code: str,
        detail: str,
        meta: dict[str, Any],
    ) -> None:
        self.operation = operation
        self.status = status
        self.code = code
        self.detail = detail
