from collections.abc import Callable

import click
from rich.console import Console
from rich.table import Table

from aggregates.values import InvalidValue, label, network
from api.bootstrap import bootstrap
from api.config import Config
from commands.tokens import DEFAULT_SCOPES, SCOPES


def register(cli: click.Group) -> None:
    cli.add_command(tokens)


@click.group()
def tokens() -> None:
    """Issue, list, revoke and rotate API tokens (only hashes are stored)."""


@tokens.command()
@click.option("--name", required=True, help="Unique name, e.g. customerio-workspace.")
@click.option("--actor", required=True, help='Recorded in the audit trail, e.g. "Customer.io".')
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help=f"Repeat for each permission; default {' and '.join(DEFAULT_SCOPES)} "
    "(audit:read opens the auditors' console, and nothing else).",
)
@click.option("--allow-cidr", "cidrs", multiple=True, help="Only accept calls from these networks.")
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    help="Requests per minute (default OPS_RATE_LIMIT_PER_MINUTE).",
)
@click.option("--cio-signing-key", help="Require Customer.io's X-CIO-Signature made with this key.")
@click.pass_obj
def issue(
    config: Config,
    name: str,
    actor: str,
    scopes: tuple[str, ...],
    cidrs: tuple[str, ...],
    rate_limit: int | None,
    cio_signing_key: str | None,
) -> None:
    """Create a token; prints it alone on the last line."""
    name, actor = _valid(label, name, "--name"), _valid(label, actor, "--actor")
    networks = [_valid(network, cidr, "--allow-cidr") for cidr in cidrs]
    scopes = scopes or DEFAULT_SCOPES
    with bootstrap(config) as services:
        token = services.app.issue_token(
            name, actor, list(scopes), networks, rate_limit, cio_signing_key
        )
    click.echo(f"Issued token {name!r} for {actor!r} with scopes {', '.join(scopes)}.", err=True)
    click.echo("Store it now: it is shown once and only its hash is kept.", err=True)
    click.echo(token)


@tokens.command(name="list")
@click.pass_obj
def list_(config: Config) -> None:
    """List tokens (never their values)."""
    table = Table("name", "actor", "scopes", "allow-list", "rate/min", "signed", "status")
    with bootstrap(config) as services:
        tokens_ = services.app.list_tokens()
    for token in tokens_:
        table.add_row(
            token.name,
            token.actor,
            " ".join(token.scopes),
            " ".join(token.allow_cidrs) or "any",
            str(token.rate_limit or config.rate_limit_per_minute),
            "yes" if token.requires_signature else "no",
            "revoked" if token.revoked else "active",
        )
    Console(width=160).print(table)


@tokens.command()
@click.argument("name")
@click.pass_obj
def revoke(config: Config, name: str) -> None:
    """Revoke a token; refused on every worker within 5 seconds."""
    name = name.strip()
    with bootstrap(config) as services:
        services.app.revoke_token(name)
    click.echo(f"Revoked token {name!r}.")


@tokens.command()
@click.argument("name")
@click.pass_obj
def rotate(config: Config, name: str) -> None:
    """Replace a token's value; prints the new one alone on the last line."""
    name = name.strip()
    with bootstrap(config) as services:
        token = services.app.rotate_token(name)
    click.echo(f"Rotated token {name!r}; the old value stops working within 5 seconds.", err=True)
    click.echo(token)


def _valid(rule: Callable[[str], str], value: str, option: str) -> str:
    """The domain's rule for a value, reported against the option that gave it."""
    try:
        return rule(value)
    except InvalidValue as reason:
        raise click.BadParameter(str(reason), param_hint=option) from None
