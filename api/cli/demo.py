import shlex

import click

from api.bootstrap import open_application
from api.config import Config
from commands.application import CommunityRow, PersonRow, TokenError

DEMO_PEOPLE = [
    (1001, "ada@example.com"),
    (1002, "grace@example.com"),
    (1003, "linus@example.com"),
    (1004, "shared@example.com"),
    (1005, "Shared@Example.com"),  # two people, one email: the 409 case
]
DEMO_COMMUNITIES = [(42, "Founders Circle"), (7, "VC Partners")]
DEMO_NAME = "demo"


def register(cli: click.Group) -> None:
    cli.add_command(demo)


@click.command()
@click.pass_obj
def demo(config: Config) -> None:
    """Seed a small demo directory; print a demo token and ready curl commands."""
    app = open_application(config)
    app.import_communities(CommunityRow(0, cid, name) for cid, name in DEMO_COMMUNITIES)
    app.import_people(PersonRow(0, pid, email) for pid, email in DEMO_PEOPLE)
    try:
        token = app.issue_token(
            DEMO_NAME, "Marketing Ops", ["community:add", "code:set"], [], None, None
        )
    except TokenError:
        token = app.rotate_token(DEMO_NAME)
    base = config.public_url
    people = ", ".join(f"{pid} <{email}>" for pid, email in DEMO_PEOPLE)
    communities = ", ".join(f"{cid} ({name})" for cid, name in DEMO_COMMUNITIES)
    click.echo(f"Demo directory: people {people}; communities {communities}.")
    click.echo("\nAdd person 1001 to community 42:")
    click.echo(
        _curl(
            base,
            token,
            "/api/v1/ops/people/communities/add",
            '{"data": {"type": "communityMembership", "attributes": {"personId": 1001, "communityId": 42}}}',
        )
    )
    click.echo("\nSet person 1001's signup code:")
    click.echo(
        _curl(
            base,
            token,
            "/api/v1/ops/people/code",
            '{"data": {"type": "personSignupCode", "attributes": {"personId": 1001, "code": "VC-Partners"}}}',
        )
    )
    click.echo('\nDemo token (a script token, actor "Marketing Ops"):')
    click.echo(token)


def _curl(base: str, token: str, path: str, body: str) -> str:
    return (
        f"curl -sS -X POST {shlex.quote(base + path)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -H {shlex.quote('Authorization: Bearer ' + token)} \\\n"
        '  -H "X-CIO-Idempotency-Key: $(uuidgen || date +%s%N)" \\\n'
        f"  -d {shlex.quote(body)}"
    )
