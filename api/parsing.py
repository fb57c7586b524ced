"""Turn an admitted request body into a command, with details a marketing person
can act on — including the bodies Customer.io's Liquid renders wrongly. The JSON:API
document's shape is checked here; each attribute's value by its operation's
declaration (commands/operations.py)."""

import json
import re
from dataclasses import replace
from typing import Any

import orjson

from aggregates.values import MAX_LABEL_LENGTH, has_control
from api.gate import Admission
from commands.documents import Problem, shown
from commands.fields import attr, invalid, missing
from commands.messages import DeliveredCommand
from commands.operations import Operation


def parse_command(operation: Operation, admission: Admission) -> DeliveredCommand:
    """The command an admitted call asks for, or a Problem (a 422) with its context."""
    context = admission.context
    try:
        attributes, body_workflow = parse_body(admission.body, operation)
        if context.workflow is None and body_workflow is not None:
            context = replace(context, workflow=body_workflow)
        assert context.idempotency_key is not None  # the gate generates one when absent
        return operation.build(attributes, context, context.idempotency_key, admission.fingerprint)
    except Problem as problem:
        raise problem.of_call(operation.name, context) from None


# --- malformed JSON --------------------------------------------------------

# A Liquid value rendered raw: one unquoted token (an email, a word), not a whole line.
_BARE_VALUE = r'"{field}"\s*:\s*(?P<value>[^\s,}}\]"\[{{]+)'
_EMPTY_VALUE = r'"{field}"\s*:\s*(?=[,}}\]]|$)'
_JSON_LITERAL = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null")
_LEADING_ZEROS = re.compile(r"-?0\d+")


def integer_attributes(operation: Operation) -> tuple[str, ...]:
    return ("personId", *((operation.field.name,) if operation.field.is_integer else ()))


def malformed(raw: bytes, error: orjson.JSONDecodeError, operation: Operation) -> Problem:
    text = raw.decode("utf-8", "replace")
    for field in integer_attributes(operation):
        problem = _liquid_rendered(text, field)
        if problem is not None:
            return problem
    if "{{" in text or "{%" in text:
        return Problem(
            422,
            "malformed_json",
            "Malformed JSON",
            "The body still contains Liquid ({{ … }}). Customer.io fills it in; a script must "
            'send the real values, e.g. "personId": 123.',
            pointer="",
        )
    line, column = _position(text, error.pos)
    reason = error.msg.split(":")[0]
    return Problem(
        422,
        "malformed_json",
        "Malformed JSON",
        f"The body is not valid JSON ({reason}) at line {line}, column {column}.",
        pointer="",
    )


def _liquid_rendered(text: str, field: str) -> Problem | None:
    """The guide's details for an id that Liquid rendered as nothing or as raw text."""
    if re.search(_EMPTY_VALUE.format(field=field), text):
        return invalid(
            f'{field} is empty: the body has "{field}": with no value. A Liquid '
            f"variable probably rendered as nothing. Send {field} as a number"
            + (', or send "email" instead of "personId".' if field == "personId" else "."),
            attr(field),
        )
    bare = re.search(_BARE_VALUE.format(field=field), text)
    if not bare or _JSON_LITERAL.fullmatch(bare.group("value").strip()):
        return None
    value = bare.group("value").strip()
    if _LEADING_ZEROS.fullmatch(value):
        return invalid(
            f"{field} must be an integer without leading zeros: send {int(value)}, "
            f"not {shown(value)}.",
            attr(field),
        )
    if field == "personId":
        hint = (
            " It looks like an email address: this profile stores an email in "
            '{{ customer.id }}. Send "email": "{{ customer.email }}" instead of '
            '"personId".'
            if "@" in value
            else ' Send the Play Money ID as a number, or send "email" instead.'
        )
        return invalid(f"personId must be an integer.{hint}", attr(field))
    return invalid(
        f"{field} must be an integer: send it as a number without quotes, like 42.",
        attr(field),
    )


def _position(text: str, pos: int) -> tuple[int, int]:
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


# --- the document ------------------------------------------------------------


def parse_body(raw: bytes, operation: Operation) -> tuple[dict[str, Any], str | None]:
    """Attributes of the right shape (values are checked by the operation) and the
    body's meta.workflow (if any)."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # RFC 8259 lets a BOM be ignored
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise malformed(raw, error, operation) from None
    if not isinstance(document, dict):
        raise invalid(
            'The body must be a JSON object with a "data" member.',
            "",
            "malformed_json",
            "Malformed JSON",
        )
    data = document.get("data")
    if not isinstance(data, dict):
        raise missing(
            'The body must have a "data" object (see the guide for the exact body).', "/data"
        )
    found_type = data.get("type")
    if found_type is None:
        raise missing(
            f'data.type is missing: it must be "{operation.resource_type}".', "/data/type"
        )
    if found_type != operation.resource_type:
        raise Problem(
            422,
            "wrong_type",
            "Wrong type",
            f'data.type must be "{operation.resource_type}" for this URL, not {_described(found_type)}.',
            pointer="/data/type",
        )
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise missing("data.attributes is missing: it must be an object.", "/data/attributes")
    unknown = sorted(set(attributes) - set(operation.attributes))
    if unknown:
        allowed = ", ".join(operation.attributes)
        raise invalid(
            f"Unknown attribute {shown(unknown[0])!r}: this operation accepts only {allowed}.",
            attr(shown(unknown[0])),
        )
    _refuse_repeated_attributes(raw, operation)
    return attributes, _workflow(document.get("meta"))


def _refuse_repeated_attributes(raw: bytes, operation: Operation) -> None:
    """JSON parsers keep the last of two equal keys; a body that names an attribute
    twice is ambiguous, so it is refused. The careful parse runs only when a name
    occurs twice in the raw bytes (or could be hidden behind an escape)."""
    if b"\\u" not in raw and max(map(raw.count, operation.quoted_attributes)) < 2:
        return
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in items]
        repeated.extend(n for n in operation.attributes if names.count(n) > 1)
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except ValueError:
        return
    if repeated:
        raise invalid(
            f"{repeated[0]} is given more than once; send each attribute once.",
            attr(repeated[0]),
        )


def _workflow(meta: Any) -> str | None:
    if meta is None:
        return None
    workflow = meta.get("workflow") if isinstance(meta, dict) else None
    if workflow is None:
        return None
    if not isinstance(workflow, str) or len(workflow) > MAX_LABEL_LENGTH or has_control(workflow):
        raise invalid(
            f"meta.workflow must be text of at most {MAX_LABEL_LENGTH} characters, "
            "without control characters.",
            "/meta/workflow",
        )
    return workflow.strip() or None


def _described(value: Any) -> str:
    """A value quoted back in a detail: short, and never a problem to encode."""
    if isinstance(value, str):
        return orjson.dumps(value[:40] + ("…" if len(value) > 40 else "")).decode()
    return {
        dict: "an object",
        list: "a list",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }.get(type(value), "that")
