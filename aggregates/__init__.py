"""The domain: event-sourced aggregates. Knows nothing of HTTP, SQL or Slack."""

from eventsourcing.domain import Aggregate, CanInitAggregate

from aggregates.community import Community
from aggregates.delivery import Delivery, RejectedCall
from aggregates.email_index import EmailIndex
from aggregates.person import Person
from aggregates.token import Token
from aggregates.values import normalise_email

AGGREGATES: tuple[type[Aggregate], ...] = (
    Community,
    Delivery,
    EmailIndex,
    Person,
    RejectedCall,
    Token,
)


def domain_events() -> tuple[type[Aggregate.Event], ...]:
    """Every event type the domain stores, aggregate by aggregate.

    The library gives each aggregate a default `Created` class; where `__init__` is
    decorated with another name (Person's `Registered`), that default is never stored."""
    found: list[type[Aggregate.Event]] = []
    for aggregate in AGGREGATES:
        own = [
            value
            for value in vars(aggregate).values()
            if isinstance(value, type)
            and issubclass(value, aggregate.Event)
            and value is not aggregate.Event
        ]
        creations = [event for event in own if issubclass(event, CanInitAggregate)]
        found += [e for e in own if not (e.__name__ == "Created" and len(creations) > 1)]
    return tuple(found)


__all__ = [
    "AGGREGATES",
    "Community",
    "Delivery",
    "EmailIndex",
    "Person",
    "RejectedCall",
    "Token",
    "domain_events",
    "normalise_email",
]
