"""The words of the #ops-webhooks feed: one readable line per call.

What a successful call says comes from its operation's declaration
(commands/operations.py: `Operation.outcomes`); the Slack and console sinks only
lay these lines out."""

import re
from dataclasses import dataclass
from typing import Any

import orjson

from aggregates import Delivery, RejectedCall
from commands.operations import BY_NAME

LINE_CHARS = 500
ICONS = {"ok": "✅", "noop": "➖", "fail": "❌"}

_SECRETS = re.compile(
    r"(pmo_[0-9a-f]{32}_\S+|xox[a-z]-[\w-]+|(?i:bearer)\s+\S+)",
)


@dataclass(frozen=True)
class FeedLine:
    kind: str  # "ok", "noop" or "fail"
    text: str


def clean(value: Any, limit: int = 300) -> str:
    """One line of text: no secrets, no line breaks, no Slack markup, at most `limit`."""
    text = _SECRETS.sub("[redacted]", str(value))
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def feed_line(event: Any) -> FeedLine | None:
    """One line for a call (a delivery or a rejected call); None for other events."""
    meta = getattr(event, "meta", None) or {}
    operation = clean(event.operation, 40)
    if isinstance(event, Delivery.Recorded):
        kind, what = _describe_delivery(event)
    elif isinstance(event, RejectedCall.Recorded):
        kind, what = "fail", f"{event.status} {clean(event.code, 40)}: {clean(event.detail)}"
    else:
        return None
    parts = [f"{ICONS[kind]} *{operation}* {what}"]
    if meta.get("actor"):
        parts.append(clean(meta["actor"], 60))
    if meta.get("workflow"):
        parts.append(f"workflow “{clean(meta['workflow'], 100)}”")
    if meta.get("idempotency_key"):
        parts.append(f"key `{clean(meta['idempotency_key'], 100)}`")
    text = " · ".join(parts)
    return FeedLine(kind, text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…")


def _describe_delivery(event: Any) -> tuple[str, str]:
    try:
        document = orjson.loads(event.body) if event.body else {}
    except orjson.JSONDecodeError:
        document = {}
    if event.status != 200:
        errors = document.get("errors") or [{}]
        detail = errors[0].get("detail") or event.outcome
        return "fail", f"{event.status} {clean(event.outcome, 40)}: {clean(detail)}"
    attributes = (document.get("data") or {}).get("attributes") or {}
    return describe_success(event.operation, event.outcome, attributes)


def describe_success(operation: str, outcome: str, attributes: dict[str, Any]) -> tuple[str, str]:
    """The kind and words of a call that succeeded, from its answer's attributes."""
    declared = BY_NAME.get(operation)
    said = declared.outcomes.get(outcome) if declared else None
    if declared is None or said is None:
        return "ok", clean(outcome)
    shown = {name: _shown(value, declared.field.null_words) for name, value in attributes.items()}
    return ("ok" if said.changed else "noop"), said.words.format_map(_Blank(shown))


def _shown(value: Any, null_words: str) -> str:
    """Numbers as they are, text in quotes (cleaned), null in the field's own words."""
    if value is None:
        return f"({null_words or 'none'})"
    if isinstance(value, str):
        return f"“{clean(value, 80)}”"
    return clean(value, 40)


class _Blank(dict[str, str]):
    """An attribute missing from an answer shows as "?", never a KeyError."""

    def __missing__(self, key: str) -> str:
        return "?"
