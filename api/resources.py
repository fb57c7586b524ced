"""Falcon responders: a few lines each; the work is in the gate, parsing and commands."""

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import falcon
import orjson

from api import parsing
from api.gate import Gate, fingerprint, idempotency_key, workflow_header
from api.metrics import Metrics
from api.parsing import Operation
from commands.documents import Problem
from commands.group_commit import GroupCommitter
from commands.handlers import generated_key
from commands.messages import (
    ADD_MEMBER,
    SET_CODE,
    AddMember,
    CallContext,
    PersonRef,
    RecordRejection,
    SetSignupCode,
)

T = TypeVar("T")
JSONAPI = "application/vnd.api+json"

ADD_MEMBER_OP = Operation(
    ADD_MEMBER,
    "/api/v1/ops/people/communities/add",
    "communityMembership",
    "community:add",
    ("personId", "email", "communityId"),
)
SET_CODE_OP = Operation(
    SET_CODE,
    "/api/v1/ops/people/code",
    "personSignupCode",
    "code:set",
    ("personId", "email", "code"),
)
OPERATIONS = (ADD_MEMBER_OP, SET_CODE_OP)


def request_id(req: falcon.Request) -> str:
    given = (req.get_header("X-Request-Id") or "").strip()
    if given and len(given) <= 128 and all(" " < ch <= "~" for ch in given):
        return given
    return str(uuid.uuid4())


class OperationResource:
    def __init__(
        self, operation: Operation, gate: Gate, committer: GroupCommitter, metrics: Metrics
    ) -> None:
        self._op = operation
        self._gate = gate
        self._committer = committer
        self._metrics = metrics

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        token = self._gate.authenticate(req)
        # Until the checks below pass, the context names whatever valid key and workflow the
        # headers carry, so a rejection still shows which workflow misbehaves.
        key = _unless_invalid(idempotency_key, req)
        context = CallContext(
            token.id,
            token.name,
            token.actor,
            req.context.request_id,
            idempotency_key=key.value if key else None,
            workflow=_unless_invalid(workflow_header, req),
            source_address=req.context.client_address,
            key_header=key.header if key else None,
        )
        try:
            body = self._gate.admit(req, token, self._op)
            key = idempotency_key(req)
            attributes, body_workflow = parsing.parse_body(body, self._op)
            # A call without a key is recorded under a generated one (SPEC §2), which its
            # events carry too, so an audit entry always leads to its delivery record.
            key_value = key.value if key else generated_key()
            context = replace(
                context,
                idempotency_key=key_value,
                workflow=workflow_header(req) or body_workflow,
            )
            command = self._command(attributes, context, key_value, body)
        except Problem as problem:
            if problem.status != 429:
                self._committer.submit(
                    RecordRejection(
                        context, self._op.name, problem.status, problem.code, problem.detail
                    )
                )
            raise
        started = time.perf_counter()
        outcome = self._committer.submit(command)
        self._metrics.command_seconds.labels(self._op.name).observe(time.perf_counter() - started)
        resp.status = outcome.status
        resp.content_type = JSONAPI
        resp.data = outcome.body
        if outcome.replayed:
            resp.set_header("Idempotent-Replayed", "true")

    def _command(
        self, attributes: dict[str, Any], context: CallContext, key: str, body: bytes
    ) -> AddMember | SetSignupCode:
        person_id, email = parsing.person_ref(attributes)
        person = PersonRef(person_id=person_id, email=email)
        print_ = fingerprint(self._op, body)
        if self._op is ADD_MEMBER_OP:
            return AddMember(context, key, print_, person, parsing.community_id(attributes))
        return SetSignupCode(context, key, print_, person, parsing.signup_code(attributes))


def _unless_invalid(read: Callable[[falcon.Request], T], req: falcon.Request) -> T | None:
    try:
        return read(req)
    except Problem:
        return None


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class ReadyResource:
    def __init__(self, ping: Any) -> None:
        self._ping = ping

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._ping()  # a store error becomes 503 via the error handler
        resp.media = {"status": "ready"}


class OpenApiResource:
    def __init__(self, document: dict[str, Any]) -> None:
        self._body = orjson.dumps(document)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/json"
        resp.data = self._body


class MetricsResource:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        resp.data = self._metrics.render()
