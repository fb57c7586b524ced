"""JSON:API documents. Rendered once, stored in the delivery record, replayed byte for byte."""

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Problem(Exception):
    """A refusal with a stable machine code and a plain-English detail."""

    status: int
    code: str
    title: str
    detail: str
    pointer: str | None = None
    header: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # HTTP headers to send with it

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

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
    """A value quoted back to the caller: cut, so an error never echoes a whole body."""
    return value if len(value) <= limit else value[:limit] + "…"


def resource_document(type_: str, id_: str, attributes: dict[str, Any]) -> bytes:
    return orjson.dumps({"data": {"type": type_, "id": id_, "attributes": attributes}})


def person_not_found(detail: str, pointer: str) -> Problem:
    return Problem(404, "person_not_found", "No such person", detail, pointer=pointer)
