"""Turn a raw request body into validated attributes, with details a marketing
person can act on — including the bodies Customer.io's Liquid renders wrongly."""

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson

from commands.documents import Problem

MAX_ID = 2**63 - 1
MAX_CODE_LENGTH = 64
MAX_WORKFLOW_LENGTH = 200
MAX_EMAIL_LENGTH = 254
ID_FIELDS = ("personId", "communityId")


@dataclass(frozen=True)
class Operation:
    name: str  # as in commands.messages
    path: str
    resource_type: str
    scope: str
    attributes: tuple[str, ...]


def invalid(
    detail: str, pointer: str, code: str = "invalid_field", title: str = "Invalid field"
) -> Problem:
    return Problem(422, code, title, detail, pointer=pointer)


def missing(detail: str, pointer: str) -> Problem:
    return Problem(422, "missing_field", "Missing field", detail, pointer=pointer)


def attr(name: str) -> str:
    return f"/data/attributes/{name}"


# --- malformed JSON --------------------------------------------------------

# A Liquid value rendered raw: one unquoted token (an email, a word), not a whole line.
_BARE_VALUE = r'"{field}"\s*:\s*(?P<value>[^\s,}}\]"\[{{]+)'
_EMPTY_VALUE = r'"{field}"\s*:\s*(?=[,}}\]]|$)'
_JSON_LITERAL = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null")


def malformed(raw: bytes, error: orjson.JSONDecodeError) -> Problem:
    text = raw.decode("utf-8", "replace")
    for field in ID_FIELDS:
        if re.search(_EMPTY_VALUE.format(field=field), text):
            return invalid(
                f'{field} is empty: the body has "{field}": with no value. A Liquid '
                f"variable probably rendered as nothing. Send {field} as a number"
                + (', or send "email" instead of "personId".' if field == "personId" else "."),
                attr(field),
            )
        bare = re.search(_BARE_VALUE.format(field=field), text)
        if bare and not _JSON_LITERAL.fullmatch(bare.group("value").strip()):
            value = bare.group("value").strip()
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


def _position(text: str, pos: int) -> tuple[int, int]:
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


# --- validation --------------------------------------------------------------


def parse_body(raw: bytes, operation: Operation) -> tuple[dict[str, Any], str | None]:
    """Validated attributes and the body's meta.workflow (if any)."""
    try:
        document = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))  # RFC 8259 lets a BOM be ignored
    except orjson.JSONDecodeError as error:
        raise malformed(raw, error) from None
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
            f'data.type must be "{operation.resource_type}" for this URL, not {_shown(found_type)}.',
            pointer="/data/type",
        )
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise missing("data.attributes is missing: it must be an object.", "/data/attributes")
    unknown = sorted(set(attributes) - set(operation.attributes))
    if unknown:
        allowed = ", ".join(operation.attributes)
        raise invalid(
            f"Unknown attribute {unknown[0]!r}: this operation accepts only {allowed}.",
            attr(unknown[0]),
        )
    return attributes, _workflow(document.get("meta"))


def _workflow(meta: Any) -> str | None:
    if meta is None:
        return None
    workflow = meta.get("workflow") if isinstance(meta, dict) else None
    if workflow is None:
        return None
    if (
        not isinstance(workflow, str)
        or len(workflow) > MAX_WORKFLOW_LENGTH
        or has_control(workflow)
    ):
        raise invalid(
            f"meta.workflow must be text of at most {MAX_WORKFLOW_LENGTH} characters, "
            "without control characters.",
            "/meta/workflow",
        )
    return workflow.strip() or None


def _shown(value: Any) -> str:
    """A value quoted back in a detail: short, and never a problem to encode."""
    if isinstance(value, str):
        text = orjson.dumps(value[:40] + ("…" if len(value) > 40 else "")).decode()
        return text
    return {
        dict: "an object",
        list: "a list",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }.get(type(value), "that")


def person_ref(attributes: dict[str, Any]) -> tuple[int | None, str | None]:
    has_id, has_email = "personId" in attributes, "email" in attributes
    if has_id and has_email:
        raise invalid("Send either personId or email, not both.", attr("email"))
    if not has_id and not has_email:
        raise missing(
            'personId is missing: send the Play Money ID as "personId" (or send "email").',
            attr("personId"),
        )
    if has_id:
        return person_id(attributes["personId"]), None
    return None, email(attributes["email"])


def person_id(value: Any) -> int:
    pointer = attr("personId")
    if isinstance(value, str):
        if "@" in value:
            raise invalid(
                "personId must be an integer; this looks like an email address. "
                'Send it as "email" instead of "personId".',
                pointer,
            )
        if value.strip().isdigit():
            raise invalid(
                f"personId must be an integer: send {value.strip()} without quotes.", pointer
            )
        raise invalid("personId must be an integer (the Play Money ID, without quotes).", pointer)
    return positive_int(value, "personId", "personId must be an integer")


def community_id(attributes: dict[str, Any]) -> int:
    if "communityId" not in attributes:
        raise missing(
            "communityId is missing: send the community's numeric ID, like 42.", attr("communityId")
        )
    value = attributes["communityId"]
    if isinstance(value, str):
        shown = value.strip() if value.strip().isdigit() else "42"
        raise invalid(
            f'communityId must be sent as a number without quotes: {shown}, not "{value}".',
            attr("communityId"),
        )
    return positive_int(value, "communityId", "communityId must be an integer")


def positive_int(value: Any, name: str, lead: str) -> int:
    pointer = attr(name)
    if isinstance(value, float) and value.is_integer() and abs(value) > MAX_ID:
        raise invalid(f"{lead} no larger than {MAX_ID}.", pointer)  # orjson reads these as floats
    if isinstance(value, bool) or not isinstance(value, int):
        kind = {bool: "true/false", float: "a decimal number", type(None): "null"}.get(
            type(value), "that"
        )
        raise invalid(f"{lead}, not {kind}.", pointer)
    if value <= 0:
        raise invalid(f"{lead} greater than 0.", pointer)
    if value > MAX_ID:
        raise invalid(f"{lead} no larger than {MAX_ID}.", pointer)
    return value


def email(value: Any) -> str:
    pointer = attr("email")
    if not isinstance(value, str):
        raise invalid('email must be text, like "jane@example.com".', pointer)
    trimmed = value.strip()
    if not trimmed:
        raise invalid("email is empty: the Liquid variable probably rendered nothing.", pointer)
    if "@" not in trimmed or len(trimmed) > MAX_EMAIL_LENGTH or has_control(trimmed):
        raise invalid('email must be an email address, like "jane@example.com".', pointer)
    return trimmed


def signup_code(attributes: dict[str, Any]) -> str | None:
    pointer = attr("code")
    if "code" not in attributes:
        raise missing(
            "code is missing. A missing code never clears anything: to clear the code "
            'send "code": null explicitly.',
            pointer,
        )
    code = attributes["code"]
    if code is None:
        return None
    if not isinstance(code, str):
        raise invalid('code must be text (like "VC-Partners") or null to clear it.', pointer)
    if code.strip().lower() in ("null", "none", "nil"):
        raise invalid(
            f'code is the text "{code.strip()}". To clear the code send null without quotes: '
            '"code": null.',
            pointer,
        )
    if not code.strip():
        raise invalid(
            "code is empty. An empty code never clears anything (a Liquid variable may have "
            'rendered nothing): to clear the code send "code": null.',
            pointer,
        )
    if code != code.strip():
        raise invalid("code has leading or trailing spaces; send it without them.", pointer)
    if has_control(code):
        raise invalid("code contains control characters (such as a line break or tab).", pointer)
    if len(code) > MAX_CODE_LENGTH:
        raise invalid(
            f"code is {len(code)} characters long; the most is {MAX_CODE_LENGTH}.", pointer
        )
    return code


def has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in text)
