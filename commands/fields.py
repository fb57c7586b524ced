"""The attributes of an operation and how each is validated, with details written
for the marketer who has to fix the Customer.io workflow. The rules themselves
are the domain's (aggregates/values.py); here they meet JSON:API pointers."""

from typing import Any

from aggregates import values
from aggregates.values import InvalidValue
from commands.documents import Problem, shown


def attr(name: str) -> str:
    return f"/data/attributes/{name}"


def invalid(
    detail: str, pointer: str, code: str = "invalid_field", title: str = "Invalid field"
) -> Problem:
    return Problem(422, code, title, detail, pointer=pointer)


def missing(detail: str, pointer: str) -> Problem:
    return Problem(422, "missing_field", "Missing field", detail, pointer=pointer)


def person_ref(attributes: dict[str, Any]) -> tuple[int | None, str | None]:
    """Exactly one of personId and email."""
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
                f"personId must be an integer: send {shown(value.strip())} without quotes.",
                pointer,
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
        example = shown(value.strip()) if value.strip().isdigit() else "42"
        raise invalid(
            f'communityId must be sent as a number without quotes: {example}, not "{shown(value)}".',
            attr("communityId"),
        )
    return positive_int(value, "communityId", "communityId must be an integer")


def positive_int(value: Any, name: str, lead: str) -> int:
    pointer = attr(name)
    if isinstance(value, float) and value.is_integer() and abs(value) > values.MAX_ID:
        # orjson reads integers beyond 64 bits as floats
        raise invalid(f"{lead} no larger than {values.MAX_ID}.", pointer)
    if isinstance(value, bool) or not isinstance(value, int):
        kind = {bool: "true/false", float: "a decimal number", type(None): "null"}.get(
            type(value), "that"
        )
        raise invalid(f"{lead}, not {kind}.", pointer)
    try:
        return values.positive_id(value)
    except InvalidValue as reason:
        raise invalid(f"{lead} {str(reason).removeprefix('must be ')}.", pointer) from None


def email(value: Any) -> str:
    pointer = attr("email")
    if not isinstance(value, str):
        raise invalid('email must be text, like "jane@example.com".', pointer)
    try:
        return values.email_address(value)
    except InvalidValue as reason:
        if str(reason) == "is empty":
            raise invalid(
                "email is empty: the Liquid variable probably rendered nothing.", pointer
            ) from None
        raise invalid('email must be an email address, like "jane@example.com".', pointer) from None


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
    try:
        return values.signup_code(code)
    except InvalidValue as reason:
        raise invalid(_CODE_DETAILS.get(str(reason), f"code {reason}."), pointer) from None


_CODE_DETAILS = {
    "is empty": "code is empty. An empty code never clears anything (a Liquid variable may have "
    'rendered nothing): to clear the code send "code": null.',
    "has leading or trailing spaces": "code has leading or trailing spaces; send it without them.",
}
