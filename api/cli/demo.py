import json
import shlex

import click

from api.bootstrap import bootstrap
from api.config import Config
from commands.directory import CommunityRow, PersonRow
from commands.operations import OPERATIONS, Operation
from commands.tokens import DEFAULT_SCOPES, TokenError

DEMO_PEOPLE = [
    (1001, "ada@example.com"),
    (1002, "grace@example.com"),
    (1003, "linus@example.com"),
    (1004, "shared@example.com"),
    (1005, "Shared@Example.com"),  # two people, one email: the 409 case
]
DEMO_COMMUNITIES = [(42, "Founders Circle"), (7, "VC Partners")]
DEMO_NAME = "demo"
DEMO_PERSON = DEMO_PEOPLE[0][0]


def register(cli: click.Group) -> None:
    cli.add_command(demo)


@click.command()
@click.pass_obj
def demo(config: Config) -> None:
    """Seed a small demo directory; print a demo token and ready curl commands."""
    with bootstrap(config) as services:
        app = services.app
        app.import_communities(CommunityRow(0, cid, name) for cid, name in DEMO_COMMUNITIES)
        app.import_people(PersonRow(0, pid, email) for pid, email in DEMO_PEOPLE)
        try:
            token = app.issue_token(
                DEMO_NAME, "Marketing Ops", list(DEFAULT_SCOPES), [], None, None
            )
        except TokenError:
            token = app.rotate_token(DEMO_NAME)
    people = ", ".join(f"{pid} <{email}>" for pid, email in DEMO_PEOPLE)
    communities = ", ".join(f"{cid} ({name})" for cid, name in DEMO_COMMUNITIES)
    click.echo(f"Demo directory: people {people}; communities {communities}.")
    for operation in OPERATIONS:
        click.echo(f"\n{operation.summary} (person {DEMO_PERSON}):")
        click.echo(_curl(config.public_url, token, operation))
    click.echo('\nDemo token (a script token, actor "Marketing Ops"):')
    click.echo(token)


def _curl(base: str, token: str, operation: Operation) -> str:
    attributes = {"personId": DEMO_PERSON, operation.field.name: operation.field.example}
    body = json.dumps({"data": {"type": operation.resource_type, "attributes": attributes}})
    return (
        f"curl -sS -X POST {shlex.quote(base + operation.path)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -H {shlex.quote('Authorization: Bearer ' + token)} \\\n"
        '  -H "X-CIO-Idempotency-Key: $(uuidgen || date +%s%N)" \\\n'
        f"  -d {shlex.quote(body)}"
    )
