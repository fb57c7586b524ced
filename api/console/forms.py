"""Query strings in, typed values out: the audit filters and the as-of instant.

Times are UTC. A date alone means its midnight, except as the end of a range,
where it means the whole day (as `pm-ops audit --until` does)."""

from datetime import datetime, timedelta
from urllib.parse import urlencode

import falcon

from api.console.reads import AuditFilters
from projections.audit import OPERATION_NAMES
from projections.times import parse_time

FILTER_FIELDS = (
    "person",
    "email",
    "community",
    "actor",
    "token",
    "workflow",
    "operation",
    "since",
    "until",
)
OPERATIONS = OPERATION_NAMES  # every kind of audit entry
TEXT_LIMIT = 300


def _date_only(text: str) -> bool:
    return len(text) == len("2026-11-24")


def parse_moment(text: str, *, end_of_day: bool = False) -> datetime:
    moment = parse_time(text)
    if end_of_day and _date_only(text.strip()):
        moment += timedelta(days=1, microseconds=-1)
    return moment


def raw_filters(req: falcon.Request) -> dict[str, str]:
    """The filter fields the request carries, trimmed; empty ones left out."""
    raw = {}
    for name in FILTER_FIELDS:
        value = (req.get_param(name) or "").strip()[:TEXT_LIMIT]
        if value:
            raw[name] = value
    return raw


def parse_filters(raw: dict[str, str]) -> tuple[AuditFilters, dict[str, str]]:
    """Filters and, per field, what is wrong with it (the page shows it beside the field)."""
    errors: dict[str, str] = {}
    values: dict[str, object] = {}
    for name in ("person", "community"):
        if name in raw:
            try:
                number = int(raw[name])
                if number <= 0:
                    raise ValueError
                values[name] = number
            except ValueError:
                errors[name] = "Enter a whole number greater than 0."
    for name in ("email", "actor", "token", "workflow"):
        if name in raw:
            values[name] = raw[name]
    if "operation" in raw:
        if raw["operation"] in OPERATIONS:
            values["operation"] = raw["operation"]
        else:
            errors["operation"] = "Choose an operation from the list."
    for name in ("since", "until"):
        if name in raw:
            try:
                values[name] = parse_moment(raw[name], end_of_day=name == "until")
            except ValueError:
                errors[name] = "Enter a time like 2026-03-01T14:30 (UTC) or a date."
    return AuditFilters(**values), errors  # type: ignore[arg-type]


def query(raw: dict[str, str], **extra: str | int | None) -> str:
    """A query string of these filters and extra parameters (None ones left out)."""
    pairs = {**raw, **{k: str(v) for k, v in extra.items() if v is not None}}
    return urlencode(pairs)


def positive_int(req: falcon.Request, name: str) -> int | None:
    value = (req.get_param(name) or "").strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value) or None
