"""Commands: what a caller asked for, with who and why attached."""

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

ADD_MEMBER = "add-member"
SET_CODE = "set-code"


@dataclass(frozen=True)
class CallContext:
    """Who made the call and why; copied onto every event the call causes."""

    token_id: UUID
    token_name: str
    actor: str
    request_id: str
    idempotency_key: str | None = None
    workflow: str | None = None
    source_address: str | None = None
    key_header: str | None = None  # which header carried the key, for error sources

    def meta(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "token": self.token_name,
            "idempotency_key": self.idempotency_key,
            "workflow": self.workflow,
            "source_address": self.source_address,
            "request_id": self.request_id,
        }


@dataclass(frozen=True)
class PersonRef:
    """Exactly one of person_id and email is set."""

    person_id: int | None = None
    email: str | None = None


@dataclass(frozen=True)
class AddMember:
    context: CallContext
    key: str
    fingerprint: str
    person: PersonRef
    community_id: int
    operation: str = field(default=ADD_MEMBER, init=False)


@dataclass(frozen=True)
class SetSignupCode:
    context: CallContext
    key: str
    fingerprint: str
    person: PersonRef
    code: str | None
    operation: str = field(default=SET_CODE, init=False)


@dataclass(frozen=True)
class RecordRejection:
    """An authenticated call refused before reaching the domain."""

    context: CallContext
    operation: str
    status: int
    code: str
    detail: str


DeliveredCommand = AddMember | SetSignupCode
Command = AddMember | SetSignupCode | RecordRejection


@dataclass(frozen=True)
class Outcome:
    """The HTTP-visible result of a command: status and the exact body bytes."""

    status: int
    body: bytes
    replayed: bool = False
