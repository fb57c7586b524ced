"""`pm-ops cio snippet`: the Customer.io Webhook action, ready to paste, in the UI's order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click

from aggregates.values import InvalidValue, label
from api.cli import cio_sync
from api.config import Config
from commands.documents import Problem
from commands.operations import OPERATIONS, Field, Operation

TOKEN_PLACEHOLDER = "<workspace token>"  # noqa: S105 - a placeholder, never a token


def register(cli: click.Group) -> None:
    for operation in OPERATIONS:
        snippet.add_command(snippet_command(operation))
    cli.add_command(cio)
    cio_sync.register(cio)  # failures, resync: the profile sync's commands


@click.group()
def cio() -> None:
    """Customer.io set-up helpers."""


@cio.group()
def snippet() -> None:
    """Print a Customer.io Webhook action to paste: Method, URL, Headers, Body.

    The URL comes from OPS_PUBLIC_URL. The Authorization value is a
    placeholder: a real token is never printed.
    """


@dataclass(frozen=True)
class Snippet:
    operation: str
    title: str
    url: str
    headers: tuple[tuple[str, str, str], ...]  # name, value, what it is
    body: str
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "operation": self.operation,
            "method": "POST",
            "url": self.url,
            "headers": [{"name": n, "value": v} for n, v, _ in self.headers],
            "body": self.body,
            "notes": list(self.notes),
        }

    def render(self) -> str:
        width = max(len(name) for name, _, _ in self.headers)
        lines = [
            f"Customer.io Webhook action: {self.title}",
            "Fill in the four parts in this order.",
            "",
            "1. Method (dropdown)",
            "POST",
            "",
            "2. URL",
            self.url,
            "",
            f"3. Headers (click Add header for each of these {len(self.headers)} rows: Name, Value)",
        ]
        lines += [f"{name.ljust(width)}  {value}" for name, value, _ in self.headers]
        lines += [""]
        lines += [f"   {name}: {note}" for name, _, note in self.headers]
        lines += ["", "4. Body (paste into the body editor)", self.body, ""]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


COMMON_OPTIONS = (
    click.Option(
        ["--email-fallback"],
        is_flag=True,
        help='Identify the person by "email": "{{ customer.email }}" instead of '
        "personId (for older profiles whose customer.id holds an email).",
    ),
    click.Option(
        ["--token-ref"],
        default=TOKEN_PLACEHOLDER,
        show_default=True,
        metavar="TEXT",
        help="What to show after Bearer, e.g. how your workspace references the "
        "token. Never a real token.",
    ),
    click.Option(
        ["--workflow"],
        help="Add the optional X-Ops-Workflow header with this name; the audit trail "
        "records it as the originating workflow.",
    ),
    click.Option(["--json", "as_json"], is_flag=True, help="Print JSON for tooling."),
)


def snippet_command(operation: Operation) -> click.Command:
    """`cio snippet NAME`, with the option its operation's attribute needs."""
    field = operation.field
    options = [
        click.Option(
            [f"--{field.option}", "value"],
            type=click.IntRange(min=1) if field.is_integer else str,
            required=not field.nullable,
            help=field.help,
        )
    ]
    if field.nullable:
        options.append(
            click.Option(["--clear"], is_flag=True, help=f'Send "{field.name}": null: clears it.')
        )

    @click.pass_obj
    def callback(config: Config, value: Any, clear: bool = False, **common: Any) -> None:
        show(build_snippet(config, operation, value, clear, **common), common["as_json"])

    return click.Command(
        operation.name,
        params=[*options, *COMMON_OPTIONS],
        callback=callback,
        help=f"The Webhook action to {operation.summary[0].lower()}{operation.summary[1:]}.",
    )


def build_snippet(
    config: Config,
    operation: Operation,
    value: Any,
    clear: bool,
    *,
    email_fallback: bool,
    token_ref: str,
    workflow: str | None,
    as_json: bool,
) -> Snippet:
    field = operation.field
    option = f"--{field.option}"
    if field.nullable and (value is None) == (not clear):
        raise click.UsageError(f"give {option} {field.option.upper()}, or --clear to clear it")
    if value is not None:
        check_value(field, value)
    rendered = json.dumps(value)
    title = f"{operation.summary.lower()}: {field.name} {rendered}"
    return Snippet(
        operation.name,
        title,
        public_url(config) + operation.path,
        headers(token_ref, workflow),
        render_body(operation.resource_type, email_fallback, (field.name, rendered)),
        tuple(
            person_notes(email_fallback)
            + field_notes(field, rendered)
            + list(operation.notes)
            + COMMON_NOTES
        ),
    )


def field_notes(field: Field, rendered: str) -> list[str]:
    if field.is_integer:
        return [f"{field.name} {rendered} is a number: keep it without quotes."]
    if rendered == "null":
        return [
            f'"{field.name}": null clears it (back to {field.null_words}). Never leave {field.name} out '
            f"of the body: a missing {field.name} is an error, not a clear.",
        ]
    return [
        f"Replace {rendered} to set another {field.name}; to clear it, send null (without quotes)."
    ]


def check_value(field: Field, value: Any) -> None:
    """The server's own validation of the attribute, run before anything is printed."""
    try:
        field.read({field.name: value})
    except Problem as problem:
        raise click.BadParameter(problem.detail, param_hint=f"--{field.option}") from None
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        raise click.BadParameter(
            "contains Liquid ({{ or {%), which Customer.io would render",
            param_hint=f"--{field.option}",
        )


COMMON_NOTES = [
    "Do not skip X-CIO-Idempotency-Key: with it, Customer.io's retries of a delivery are "
    "a guaranteed no-op.",
    "Statuses: 200 done; 401/403 tell engineering; 404/409/422 you fix the input (read the "
    "detail in the response); 429 slow down (Customer.io retries); 5xx tell engineering.",
]


def person_notes(email_fallback: bool) -> list[str]:
    if email_fallback:
        return [
            'This body identifies the person by "email": "{{ customer.email }}" (leave it as '
            "Liquid, in quotes). Use it for older profiles whose customer.id holds an email; "
            "if two people share the email you get 409 and must send the Play Money ID.",
        ]
    return [
        "Leave {{ customer.id }} as Liquid, without quotes: Customer.io puts the person's "
        "Play Money ID there.",
        'If a workflow fails with "personId must be an integer", the profile stores an email '
        "in customer.id: print this snippet again with --email-fallback.",
    ]


def headers(token_ref: str, workflow: str | None) -> tuple[tuple[str, str, str], ...]:
    check_token_ref(token_ref)
    rows = [
        ("Content-Type", "application/json", "always application/json."),
        (
            "Authorization",
            f"Bearer {token_ref}",
            "Bearer followed by the workspace token engineering set up once; never paste a "
            "token into Slack or a document.",
        ),
        (
            "X-CIO-Idempotency-Key",
            "{{ event.delivery_id }}",
            "leave this as Liquid: Customer.io substitutes a unique value per delivery so "
            "retries are safe.",
        ),
    ]
    if workflow is not None:
        try:
            workflow = label(workflow)
        except InvalidValue as reason:
            raise click.BadParameter(str(reason), param_hint="--workflow") from None
        rows.append(
            (
                "X-Ops-Workflow",
                workflow,
                "optional: recorded in the audit trail as the originating workflow.",
            )
        )
    return tuple(rows)


def render_body(type_: str, email_fallback: bool, field: tuple[str, str]) -> str:
    person = (
        '"email": "{{ customer.email }}"' if email_fallback else '"personId": {{ customer.id }}'
    )
    name, value = field
    return "\n".join(
        [
            "{",
            '  "data": {',
            f'    "type": "{type_}",',
            '    "attributes": {',
            f"      {person},",
            f'      "{name}": {value}',
            "    }",
            "  }",
            "}",
        ]
    )


def check_token_ref(token_ref: str) -> None:
    if token_ref.strip().startswith("pmo_") or not token_ref.strip():
        raise click.BadParameter(
            "give a placeholder or a reference, never a real token", param_hint="--token-ref"
        )


def public_url(config: Config | None) -> str:
    url = config.public_url if config is not None else Config.from_env().public_url
    return url.rstrip("/")


def show(snippet_: Snippet, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(snippet_.as_dict(), indent=2))
    else:
        click.echo(snippet_.render())
