"""Each operation, declared once.

Everything that differs between "add someone to a community" and "set someone's
signup code" is here: the URL, the JSON:API type, the permission, the one
attribute besides the person (how it is validated, what it becomes in the
command, how a CLI asks for it), the response, the words people read about
each outcome, and what the event it records means to each read model and feed
(the person's state, the audit trail, Customer.io). Routes, OpenAPI, token
scopes, `cio snippet`, `demo`, `pm-ops call`, the script runner, the console,
the read models and the feeds all read these declarations; a third operation is
one more declaration, its command, one handler (commands/handlers.py), its
event on the aggregate, its typed client method, and its tests."""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from aggregates import Person
from aggregates.values import MAX_CODE_LENGTH
from commands import fields
from commands.messages import (
    ADD_MEMBER,
    SET_CODE,
    AddMember,
    CallContext,
    DeliveredCommand,
    PersonRef,
    SetSignupCode,
)

PERSON_ATTRIBUTES = ("personId", "email")


@dataclass(frozen=True)
class Field:
    """The attribute an operation takes besides the person."""

    name: str  # JSON attribute, e.g. "communityId"
    argument: str  # the command's field, e.g. "community_id"
    read: Callable[[dict[str, Any]], Any]  # validates it from the attributes (raises Problem)
    schema: dict[str, Any]  # its OpenAPI schema
    option: str  # how a CLI asks for it: --community
    metavar: str  # what a CLI says it takes: --community ID
    help: str
    example: Any  # a typical value (demo, docs)
    nullable: bool = False  # null is meaningful: a CLI says --clear
    null_words: str = ""  # what null means: "the platform default"

    @property
    def is_integer(self) -> bool:
        return self.schema.get("type") == "integer"


@dataclass(frozen=True)
class Outcome:
    changed: bool  # False: a no-op (nothing written but the delivery record)
    words: str  # the feed's line, formatted with the response attributes


@dataclass(frozen=True)
class StateChange:
    """What the event changes in the person's current state (projections/state.py):
    the person `joins` the community named by that event attribute, or the event
    `sets` a state attribute ("signup_code", "email") to an event attribute."""

    joins: str | None = None
    sets: tuple[str, str] | None = None  # (state attribute, event attribute)


@dataclass(frozen=True)
class AuditRecord:
    """How the audit trail records the event (projections/audit.py): which of its
    attributes fill the entry's community and previous / new value columns (or a fixed
    new value), and how a page says the change, formatted with the entry's columns."""

    words: str
    community_id: str | None = None
    previous_value: str | None = None
    new_value: str | None = None
    fixed_new_value: str | None = None


@dataclass(frozen=True)
class Announcement:
    """The event Customer.io is sent (projections/customerio.py): its name, and the
    event attributes its `data` carries, under their own names."""

    name: str
    data: tuple[str, ...]


@dataclass(frozen=True)
class Operation:
    name: str
    path: str
    resource_type: str
    scope: str
    permission: str  # "may not ..." in a 403
    summary: str
    field: Field
    command: type[DeliveredCommand]
    response: dict[str, dict[str, Any]]  # response attributes and their schemas
    outcomes: dict[str, Outcome]
    event: type[Person.Event]  # what a change records (its meanings below)
    state: StateChange
    audit: AuditRecord
    customerio: Announcement | None  # None: Customer.io is not told
    notes: tuple[str, ...] = field(default=())  # what the response means, for a person pasting it

    @cached_property  # read on every call
    def attributes(self) -> tuple[str, ...]:
        return (*PERSON_ATTRIBUTES, self.field.name)

    @cached_property
    def quoted_attributes(self) -> tuple[bytes, ...]:
        """Each attribute's name as it appears, quoted, in a JSON body."""
        return tuple(f'"{name}"'.encode() for name in self.attributes)

    def build(
        self, attributes: dict[str, Any], context: CallContext, key: str, fingerprint: str
    ) -> DeliveredCommand:
        """The command for validated-shape attributes (raises Problem for bad values)."""
        person_id, email = fields.person_ref(attributes)
        value = self.field.read(attributes)
        return self.command(  # type: ignore[call-arg]
            context=context,
            key=key,
            fingerprint=fingerprint,
            person=PersonRef(person_id=person_id, email=email),
            **{self.field.argument: value},
        )


ADD_MEMBER_OPERATION = Operation(
    name=ADD_MEMBER,
    path="/api/v1/ops/people/communities/add",
    resource_type="communityMembership",
    scope="community:add",
    permission="add people to communities",
    summary="Add someone to a community",
    field=Field(
        name="communityId",
        argument="community_id",
        read=fields.community_id,
        schema={"type": "integer", "minimum": 1},
        option="community",
        metavar="ID",
        help="Community ID: open the community in admin, /admin/communities/42 means 42.",
        example=42,
    ),
    command=AddMember,
    response={
        "personId": {"type": "integer"},
        "communityId": {"type": "integer"},
        "alreadyMember": {"type": "boolean"},
    },
    outcomes={
        "added": Outcome(True, "person {personId} added to community {communityId}"),
        "already_member": Outcome(
            False, "person {personId} already in community {communityId}, nothing changed"
        ),
    },
    event=Person.MemberAdded,
    state=StateChange(joins="community_id"),
    audit=AuditRecord(
        words="joined community {community_id}",
        community_id="community_id",
        fixed_new_value="member",
    ),
    customerio=Announcement("community_joined", ("community_id",)),
    notes=(
        'Response "alreadyMember": false means added; true means they were already a member '
        "and nothing changed. Either way the call succeeded, and it is safe to repeat.",
    ),
)

SET_CODE_OPERATION = Operation(
    name=SET_CODE,
    path="/api/v1/ops/people/code",
    resource_type="personSignupCode",
    scope="code:set",
    permission="set signup codes",
    summary="Set someone's signup code",
    field=Field(
        name="code",
        argument="code",
        read=fields.signup_code,
        schema={
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": MAX_CODE_LENGTH,
            "description": "null clears; missing or empty is refused.",
        },
        option="code",
        metavar="CODE",
        help="The signup code to set, e.g. VC-Partners.",
        example="VC-Partners",
        nullable=True,
        null_words="the platform default",
    ),
    command=SetSignupCode,
    response={
        "personId": {"type": "integer"},
        "code": {"type": ["string", "null"]},
        "previousCode": {"type": ["string", "null"]},
        "changed": {"type": "boolean"},
    },
    outcomes={
        "changed": Outcome(True, "person {personId} signup code {previousCode} → {code}"),
        "unchanged": Outcome(
            False, "person {personId} already had signup code {code}, nothing changed"
        ),
    },
    event=Person.SignupCodeChanged,
    state=StateChange(sets=("signup_code", "new_code")),
    audit=AuditRecord(
        words="{previous_value} → {new_value}",
        previous_value="previous_code",
        new_value="new_code",
    ),
    customerio=Announcement("signup_code_changed", ("previous_code", "new_code")),
    notes=(
        'Response "changed": true means updated ("previousCode" shows what it was); false '
        "means it already had that value and nothing changed. Safe to repeat.",
    ),
)

OPERATIONS: tuple[Operation, ...] = (ADD_MEMBER_OPERATION, SET_CODE_OPERATION)
BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
BY_EVENT: dict[type, Operation] = {op.event: op for op in OPERATIONS}
OPERATION_SCOPES: tuple[str, ...] = tuple(op.scope for op in OPERATIONS)
