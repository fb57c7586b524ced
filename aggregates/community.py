from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from aggregates.ids import derived_id


class Community(Aggregate):
    @staticmethod
    def create_id(community_id: int, **_: Any) -> UUID:
        return derived_id("community", community_id)

    @event("Created")
    def __init__(self, community_id: int, name: str, meta: dict[str, Any]) -> None:
        self.community_id = community_id
        self.name = name

    @event("Renamed")
    def rename(self, name: str, meta: dict) -> None:
        self.name = name
