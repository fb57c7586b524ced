"""The words of the #ops-webhooks feed: one readable line per call.

Kept apart from Slack itself so the outcome words can later come from the
operations' declaration; the Slack and console sinks only lay these lines out."""

import re
from dataclasses import dataclass
from typing import Any

import orjson

from aggregates import Delivery, RejectedCall

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


def _code(value: str | None) -> str:
    return "(platform default)" if value is None else f"“{clean(value, 80)}”"


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
    person = attributes.get("personId")
    if operation == "add-member":
        community = attributes.get("communityId")
        if outcome == "added":
            return "ok", f"person {person} added to community {community}"
        return "noop", f"person {person} already in community {community}, nothing changed"
    if operation == "set-code":
        code = attributes.get("code")
        if outcome == "changed":
            previous = attributes.get("previousCode")
            return "ok", f"person {person} signup code {_code(previous)} → {_code(code)}"
        return "noop", f"person {person} already had signup code {_code(code)}, nothing changed"
    return "ok", clean(outcome)
