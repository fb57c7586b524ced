"""JSON:API documents. Rendered once, stored in the delivery record, replayed byte for byte."""

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from aggregates.values import printable

if TYPE_CHECKING:
    from commands.messages import CallContext


@dataclass(frozen=True)
class Problem(Exception):
    """A refusal with a stable machine code and a plain-English detail: the one refusal
    type, from the gate's checks to a handler's 404 and the console's sign-in.

    A refusal of a call after its caller is known carries the operation and the call's
    context (`of_call`), so it is recorded in the log once, where it is rendered."""

    status: int
    code: str
    title: str
    detail: str
    pointer: str | None = None
    header: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # HTTP headers to send with it
    operation: str | None = field(default=None, compare=False)  # the call it refuses
    context: "CallContext | None" = field(default=None, compare=False)  # who made it

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

    def of_call(self, operation: str, context: "CallContext | None" = None) -> "Problem":
        """This refusal, as the answer to a call of `operation` by `context`'s caller."""
        return replace(self, operation=operation, context=context)

    def as_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "status": str(self.status),
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        }
        if self.pointer is not None:
            error["source"] = {"pointer": self.pointer}
        elif self.header is not None:
            error["source"] = {"header": self.header}
        return error

    def document(self) -> bytes:
        return orjson.dumps({"errors": [self.as_error()]})


MAX_SHOWN = 64


def shown(value: str, limit: int = MAX_SHOWN) -> str:
    """A value quoted back to the caller: cut, so an error never echoes a whole body, and
    with control and separator characters written as escapes (\\x00, \\n): the detail is
    recorded in the log, whose every read model must be able to store it (PostgreSQL
    text cannot hold a NUL)."""
    cut = value if len(value) <= limit else value[:limit] + "…"
    return printable(cut)


def resource_document(type_: str, id_: str, attributes: dict[str, Any]) -> bytes:
    return orjson.dumps({"data": {"type": type_, "id": id_, "attributes": attributes}})


def person_not_found(detail: str, pointer: str) -> Problem:
    return Problem(404, "person_not_found", "No such person", detail, pointer=pointer)
