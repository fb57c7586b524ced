"""Falcon responders: a few lines each. Admission is api/gate.py, parsing
api/parsing.py, the work commands/; refusals are rendered (and recorded) once, in
api/app.py."""

import time
import uuid
from typing import Any

import falcon
import orjson

from api.gate import Gate
from api.metrics import Metrics
from api.parsing import parse_command
from commands.group_commit import GroupCommitter
from commands.messages import Outcome
from commands.operations import Operation

JSONAPI = "application/vnd.api+json"


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
        self._command_seconds = metrics.command_timer(operation.name)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        admission = self._gate.admit(req, self._op)
        command = parse_command(self._op, admission)
        started = time.perf_counter()
        outcome = self._committer.submit(command)
        self._command_seconds.observe(time.perf_counter() - started)
        answer(resp, outcome)


def answer(resp: falcon.Response, outcome: Outcome) -> None:
    resp.status = outcome.status
    resp.content_type = JSONAPI
    resp.data = outcome.body
    if outcome.replayed:
        resp.set_header("Idempotent-Replayed", "true")


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
