"""`pm-ops cio snippet`: the Customer.io Webhook action, ready to paste, in the UI's order."""

from __future__ import annotations

import json
from dataclasses import dataclass

import click

from api.cli import cio_sync
from api.client import ADD_MEMBER_PATH, SET_CODE_PATH
from api.config import Config

TOKEN_PLACEHOLDER = "<workspace token>"  # noqa: S105 - a placeholder, never a token
MAX_CODE_LENGTH = 64
MAX_WORKFLOW_LENGTH = 200


def register(cli: click.Group) -> None:
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


def common(function: object) -> object:
    for option in reversed(
        [
            click.option(
                "--email-fallback",
                is_flag=True,
                help='Identify the person by "email": "{{ customer.email }}" instead of '
                "personId (for older profiles whose customer.id holds an email).",
            ),
            click.option(
                "--token-ref",
                default=TOKEN_PLACEHOLDER,
                show_default=True,
                metavar="TEXT",
                help="What to show after Bearer, e.g. how your workspace references the "
                "token. Never a real token.",
            ),
            click.option(
                "--workflow",
                help="Add the optional X-Ops-Workflow header with this name; the audit trail "
                "records it as the originating workflow.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON for tooling."),
        ]
    ):
        function = option(function)  # type: ignore[operator]
    return function


@snippet.command("add-member")
@click.option(
    "--community",
    "community_id",
    required=True,
    type=click.IntRange(min=1),
    help="Community ID: open the community in admin, /admin/communities/42 means 42.",
)
@common  # type: ignore[arg-type]
@click.pass_obj
def add_member(
    config: Config,
    community_id: int,
    email_fallback: bool,
    token_ref: str,
    workflow: str | None,
    as_json: bool,
) -> None:
    """The Webhook action that adds the person to a community."""
    body = render_body(
        "communityMembership", email_fallback, ("communityId", json.dumps(community_id))
    )
    notes = [
        f"{community_id} is the community's numeric ID: keep it a number, without quotes.",
        'Response "alreadyMember": false means added; true means they were already a member '
        "and nothing changed. Either way the call succeeded, and it is safe to repeat.",
    ]
    show(
        Snippet(
            "add-member",
            f"add the person to community {community_id}",
            public_url(config) + ADD_MEMBER_PATH,
            headers(token_ref, workflow),
            body,
            tuple(person_notes(email_fallback) + notes + COMMON_NOTES),
        ),
        as_json,
    )


@snippet.command("set-code")
@click.option("--code", help="The signup code to set, e.g. VC-Partners.")
@click.option("--clear", is_flag=True, help='Clear the code: the body says "code": null.')
@common  # type: ignore[arg-type]
@click.pass_obj
def set_code(
    config: Config,
    code: str | None,
    clear: bool,
    email_fallback: bool,
    token_ref: str,
    workflow: str | None,
    as_json: bool,
) -> None:
    """The Webhook action that sets (or clears) the person's signup code."""
    if (code is None) == (not clear):
        raise click.UsageError("give --code CODE, or --clear to reset it to the platform default")
    if code is not None:
        check_code(code)
    body = render_body("personSignupCode", email_fallback, ("code", json.dumps(code)))
    if clear:
        title = "clear the person's signup code"
        notes = [
            '"code": null clears the code (back to the platform default). Never leave code '
            "out of the body: a missing code is an error, not a clear.",
        ]
    else:
        title = f"set the person's signup code to {code}"
        notes = [
            f"Replace {json.dumps(code)} to set another code; to clear it, send null "
            "(without quotes).",
        ]
    notes.append(
        'Response "changed": true means updated ("previousCode" shows what it was); false '
        "means it already had that value and nothing changed. Safe to repeat."
    )
    show(
        Snippet(
            "set-code",
            title,
            public_url(config) + SET_CODE_PATH,
            headers(token_ref, workflow),
            body,
            tuple(person_notes(email_fallback) + notes + COMMON_NOTES),
        ),
        as_json,
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
        workflow = workflow.strip()
        if not workflow or len(workflow) > MAX_WORKFLOW_LENGTH:
            raise click.BadParameter(
                f"must be 1 to {MAX_WORKFLOW_LENGTH} characters", param_hint="--workflow"
            )
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


def check_code(code: str) -> None:
    problem = None
    if not code.strip():
        problem = "is empty: to clear the code use --clear"
    elif code != code.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in code):
        problem = "has leading/trailing spaces or control characters"
    elif len(code) > MAX_CODE_LENGTH:
        problem = f"is longer than {MAX_CODE_LENGTH} characters"
    elif "{{" in code or "{%" in code:
        problem = "contains Liquid ({{ or {%), which Customer.io would render"
    if problem:
        raise click.BadParameter(f"the code {problem}", param_hint="--code")


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
