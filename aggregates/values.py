"""The domain's rules for the values it keeps, enforced once.

HTTP parsing, the CLI and the directory import all call these, so the same input
gets the same answer everywhere (" Ada@Example.com " is one address, wherever it
comes from). Each raises InvalidValue with a reason a person can act on; callers
add where the value came from (a JSON pointer, a CLI option, a CSV line)."""

import ipaddress
import unicodedata

MAX_ID = 2**63 - 1  # the stores' BIGINT
MAX_CODE_LENGTH = 64
MAX_EMAIL_LENGTH = 254
MAX_LABEL_LENGTH = 200  # names, actors, workflows
# Line and paragraph separators (U+2028/9) break a log line as surely as a newline does.
UNPRINTABLE_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


class InvalidValue(ValueError):
    """A value the domain cannot hold; str() is the reason, in plain English."""


def has_control(text: str) -> bool:
    """Control, format and separator characters: PostgreSQL text cannot hold a NUL,
    and none of them belongs in a name, a code or an address."""
    if text.isprintable():  # the common case in one C call: no Cc/Cf/Cs/Zl/Zp at all
        return False
    return any(unicodedata.category(ch) in UNPRINTABLE_CATEGORIES for ch in text)


def printable(text: str) -> str:
    """Text as it may be kept and shown: each control, format or separator character
    written as its escape (\\x00, \\n, \\u2028), so a value quoted back in a refusal
    still makes a record that every store can hold."""
    if not has_control(text):
        return text
    return "".join(
        ascii(ch)[1:-1] if unicodedata.category(ch) in UNPRINTABLE_CATEGORIES else ch for ch in text
    )


def label(value: str, max_length: int = MAX_LABEL_LENGTH) -> str:
    """A name, actor or workflow: trimmed, not empty, printable, bounded."""
    trimmed = value.strip()
    if not trimmed:
        raise InvalidValue("is empty")
    if has_control(trimmed):
        raise InvalidValue("contains control characters")
    if len(trimmed) > max_length:
        raise InvalidValue(f"is longer than {max_length} characters")
    return trimmed


def normalise_email(email: str) -> str:
    """Emails are matched trimmed and case-insensitively (as Customer.io does)."""
    return email.strip().lower()


def email_address(value: str) -> str:
    """An email as given, trimmed (its case is kept; matching ignores it)."""
    trimmed = value.strip()
    if not trimmed:
        raise InvalidValue("is empty")
    if "@" not in trimmed or len(trimmed) > MAX_EMAIL_LENGTH or _has_space_or_control(trimmed):
        raise InvalidValue("is not an email address")
    return trimmed


def signup_code(value: str) -> str:
    """A signup code exactly as it will be stored: never blank, never padded."""
    if not value.strip():
        raise InvalidValue("is empty")
    if value != value.strip():
        raise InvalidValue("has leading or trailing spaces")
    if has_control(value):
        raise InvalidValue("contains control characters (such as a line break or tab)")
    if len(value) > MAX_CODE_LENGTH:
        raise InvalidValue(f"is {len(value)} characters long; the most is {MAX_CODE_LENGTH}")
    return value


def positive_id(value: int) -> int:
    if value <= 0:
        raise InvalidValue("must be greater than 0")
    if value > MAX_ID:
        raise InvalidValue(f"must be no larger than {MAX_ID}")
    return value


def network(cidr: str) -> str:
    """A source-address allow-list entry such as 203.0.113.0/24 (or one address)."""
    text = cidr.strip()
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidValue(f"{text[:64]!r} is not a network like 203.0.113.0/24") from None
    return text


def _has_space_or_control(text: str) -> bool:
    if text.isprintable() and " " not in text:  # printable excludes every other space
        return False
    return any(ch.isspace() for ch in text) or has_control(text)
