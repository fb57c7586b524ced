"""The domain: event-sourced aggregates. Knows nothing of HTTP, SQL or Slack."""

from aggregates.community import Community
from aggregates.delivery import Delivery, RejectedCall
from aggregates.email_index import EmailIndex
from aggregates.person import Person
from aggregates.token import Token
from aggregates.values import normalise_email

__all__ = [
    "Community",
    "Delivery",
    "EmailIndex",
    "Person",
    "RejectedCall",
    "Token",
    "normalise_email",
]
