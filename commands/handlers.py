"""One short handler per command. Each runs inside a unit of work that a
group commit may share with other commands; a handler never mutates an
aggregate before it knows the command will succeed."""

import uuid
from collections.abc import Callable
from typing import Any
from uuid import UUID

from aggregates import Community, Delivery, EmailIndex, Person, RejectedCall
from aggregates.values import printable
from commands.documents import Problem, person_not_found, resource_document, shown
from commands.messages import (
    AddMember,
    DeliveredCommand,
    Outcome,
    PersonRef,
    RecordRejection,
    SetSignupCode,
)
from commands.operations import ADD_MEMBER_OPERATION, OPERATIONS, SET_CODE_OPERATION
from commands.unit_of_work import UnitOfWork

Execute = Callable[[], tuple[bytes, str]]


def find_person(uow: UnitOfWork, ref: PersonRef) -> Person:
    if ref.person_id is not None:
        person = uow.get(Person, Person.create_id(ref.person_id))
        if person is None:
            raise person_not_found(
                f"No person with Play Money ID {ref.person_id}. "
                'Double-check the ID (or send "email" instead).',
                "/data/attributes/personId",
            )
        return person
    assert ref.email is not None
    index = uow.get(EmailIndex, EmailIndex.create_id(ref.email))
    person_ids = index.person_ids if index else []
    if not person_ids:
        raise person_not_found(
            f"No person has the email {shown(ref.email.strip())!r}. Double-check it, "
            'or send the Play Money ID as "personId" instead.',
            "/data/attributes/email",
        )
    if len(person_ids) > 1:
        raise Problem(
            409,
            "email_ambiguous",
            "Email shared by several people",
            f"{len(person_ids)} different people share the email {shown(ref.email.strip())!r}. "
            'Send the Play Money ID as "personId" instead.',
            pointer="/data/attributes/email",
        )
    person = uow.get(Person, Person.create_id(person_ids[0]))
    assert person is not None, "email index names a person the log does not have"
    return person


def person_meta(cmd: DeliveredCommand) -> dict[str, Any]:
    """The call's context, plus the email the call named the person by (if it did):
    the Customer.io feed identifies the person the same way."""
    meta = cmd.context.meta()
    if cmd.person.email is not None:
        meta["person_email"] = cmd.person.email
    return meta


def person_or_index_id(ref: PersonRef) -> UUID:
    """The aggregate a reference names first: the person, or the index of their email."""
    if ref.person_id is not None:
        return Person.create_id(ref.person_id)
    assert ref.email is not None
    return EmailIndex.create_id(ref.email)


def add_member(cmd: AddMember, uow: UnitOfWork) -> Outcome:
    def execute() -> tuple[bytes, str]:
        person = find_person(uow, cmd.person)
        if uow.get(Community, Community.create_id(cmd.community_id)) is None:
            raise Problem(
                404,
                "community_not_found",
                "No such community",
                f"No community with ID {cmd.community_id}. Open the community in admin "
                "and copy the number from its URL (/admin/communities/<ID>).",
                pointer="/data/attributes/communityId",
            )
        added = person.join(cmd.community_id, meta=person_meta(cmd))
        body = resource_document(
            ADD_MEMBER_OPERATION.resource_type,
            f"{person.person_id}:{cmd.community_id}",
            {
                "personId": person.person_id,
                "communityId": cmd.community_id,
                "alreadyMember": not added,
            },
        )
        return body, ("added" if added else "already_member")

    return _deliver(cmd, uow, execute)


def set_signup_code(cmd: SetSignupCode, uow: UnitOfWork) -> Outcome:
    def execute() -> tuple[bytes, str]:
        person = find_person(uow, cmd.person)
        previous = person.signup_code
        changed = person.set_signup_code(cmd.code, meta=person_meta(cmd))
        body = resource_document(
            SET_CODE_OPERATION.resource_type,
            str(person.person_id),
            {
                "personId": person.person_id,
                "code": cmd.code,
                "previousCode": previous,
                "changed": changed,
            },
        )
        return body, ("changed" if changed else "unchanged")

    return _deliver(cmd, uow, execute)


def record_rejection(cmd: RecordRejection, uow: UnitOfWork) -> Outcome:
    uow.add(
        RejectedCall(
            operation=cmd.operation,
            status=cmd.status,
            code=cmd.code,
            detail=printable(cmd.detail),  # stored as every read model can hold it
            meta=cmd.context.meta(),
        )
    )
    return Outcome(cmd.status, b"")


def _deliver(cmd: DeliveredCommand, uow: UnitOfWork, execute: Execute) -> Outcome:
    """Run a command once per (token owner, key): replay, refuse a reused key, or
    execute and keep the exact outcome in a delivery record saved with its events."""
    owner = cmd.context.token_id
    delivery_id = Delivery.create_id(owner, cmd.key)
    delivery = uow.recorded_delivery(delivery_id) or uow.get(Delivery, delivery_id)
    if delivery is not None:
        if (
            outcome := replay(cmd, delivery.fingerprint, delivery.status, delivery.body)
        ) is not None:
            return outcome
        problem = key_reused(cmd)
        record_rejection(
            RecordRejection(
                cmd.context, cmd.operation, problem.status, problem.code, problem.detail
            ),
            uow,
        )
        return Outcome(problem.status, problem.document())
    try:
        body, outcome = execute()
        status = 200
    except Problem as problem:
        body, outcome, status = problem.document(), problem.code, problem.status
    uow.record_delivery(
        delivery_id,
        owner,
        status,
        cmd.context.meta(),
        key=cmd.key,
        fingerprint=cmd.fingerprint,
        operation=cmd.operation,
        body=body.decode(),
        outcome=outcome,
    )
    return Outcome(status, body)


def replay(cmd: DeliveredCommand, fingerprint: str, status: int, body: str) -> Outcome | None:
    """The delivered outcome when the call repeats the delivered call (its fingerprint);
    None for another body."""
    if fingerprint != cmd.fingerprint:
        return None
    return Outcome(status, body.encode(), replayed=True)


def key_reused(cmd: DeliveredCommand) -> Problem:
    header = cmd.context.key_header or "X-CIO-Idempotency-Key"
    return Problem(
        422,
        "idempotency_key_reused",
        "Idempotency key reused",
        f"The idempotency key {shown(cmd.key)!r} was already used for a different request. "
        "Send a new key for a new request; a retry must repeat the original body exactly.",
        header=header,
    )


class Prefetcher:
    """Loads, read-only, what a handler will need. It runs in the request thread, so
    reads happen in parallel and the committer mostly just writes."""

    MAX_KNOWN_COMMUNITIES = 100_000

    def __init__(self) -> None:
        # A community, once created, is never removed: its existence can be remembered.
        self._communities: dict[UUID, Community] = {}

    def __call__(self, cmd: DeliveredCommand, uow: UnitOfWork) -> Outcome | None:
        """Returns the stored outcome of a replay: one read, and the committer is spared.
        A delivery is written once and never changes, so this answer cannot go stale."""
        delivery_id = Delivery.create_id(cmd.context.token_id, cmd.key)
        # One round trip for the delivery record and the person (or their email's index).
        uow.read_many((delivery_id, person_or_index_id(cmd.person)))
        # A delivery record is one event, never changed: its fields are read from that
        # event's plain attributes, without rebuilding the aggregate (a tenth of a replay).
        recorded = uow.created_state(delivery_id)
        if recorded is not None:
            # Another body under a used key falls through: the handler records the 422.
            return replay(cmd, recorded["fingerprint"], recorded["status"], recorded["body"])
        try:
            find_person(uow, cmd.person)
        except Problem:
            return None
        community_of = COMMUNITY_READ.get(type(cmd))
        if community_of is not None:
            self._community(community_of(cmd), uow)
        return None

    def _community(self, community_id: UUID, uow: UnitOfWork) -> None:
        known = self._communities.get(community_id)
        if known is not None:
            uow.add(known)
        elif (community := uow.get(Community, community_id)) is not None:
            if len(self._communities) >= self.MAX_KNOWN_COMMUNITIES:
                self._communities.clear()
            self._communities[community_id] = community


def generated_key() -> str:
    return f"generated-{uuid.uuid4()}"


HANDLERS: dict[type, Callable[..., Outcome]] = {
    AddMember: add_member,
    SetSignupCode: set_signup_code,
    RecordRejection: record_rejection,
}


# The community a command's handler checks, read ahead with its person.
COMMUNITY_READ: dict[type, Callable[[Any], UUID]] = {
    AddMember: lambda cmd: Community.create_id(cmd.community_id),
}


def prefetchers() -> dict[type, Callable[..., Outcome | None]]:
    prefetch = Prefetcher()
    return {op.command: prefetch for op in OPERATIONS}
