"""Jinja2 templates for the console, escaped by default."""

from typing import Any

import falcon
from jinja2 import Environment, PackageLoader, StrictUndefined

from projections.audit import describe

_env = Environment(
    loader=PackageLoader("api.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: str | None) -> str:
    """A stored UTC timestamp as people read it: 2026-11-25 14:03:07 UTC."""
    if not value:
        return "—"
    return f"{value[:10]} {value[11:19]} UTC"


def _shown(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


_env.filters["when"] = _when
_env.filters["shown"] = _shown
_env.filters["change"] = describe  # an audit entry's change, as its operation declares it


def render(resp: falcon.Response, template: str, status: int = 200, **context: Any) -> None:
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    resp.text = _env.get_template(template).render(**context)
