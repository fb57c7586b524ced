import click
from rich.console import Console
from rich.table import Table

from aggregates.token import OPERATION_SCOPES, SCOPES
from api.bootstrap import open_application
from api.config import Config
from api.parsing import has_control


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
    help="Repeat for each permission; default both operations (audit:read opens the console).",
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
    import ipaddress

    name, actor = name.strip(), actor.strip()
    for value, hint in ((name, "--name"), (actor, "--actor")):
        if not value:
            raise click.BadParameter("must not be empty", param_hint=hint)
        if has_control(value) or len(value) > 200:
            raise click.BadParameter(
                "must be at most 200 characters, without control characters", param_hint=hint
            )

    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise click.BadParameter(
                f"{cidr!r} is not a network like 203.0.113.0/24", param_hint="--allow-cidr"
            ) from None
    app = open_application(config)
    token = app.issue_token(
        name,
        actor,
        list(scopes or OPERATION_SCOPES),
        list(cidrs),
        rate_limit,
        cio_signing_key,
    )
    click.echo(
        f"Issued token {name!r} for {actor!r} with scopes {', '.join(scopes or OPERATION_SCOPES)}.",
        err=True,
    )
    click.echo("Store it now: it is shown once and only its hash is kept.", err=True)
    click.echo(token)


@tokens.command(name="list")
@click.pass_obj
def list_(config: Config) -> None:
    """List tokens (never their values)."""
    table = Table("name", "actor", "scopes", "allow-list", "rate/min", "signed", "status")
    for token in open_application(config).list_tokens():
        table.add_row(
            token.name,
            token.actor,
            " ".join(token.scopes),
            " ".join(token.allow_cidrs) or "any",
            str(token.rate_limit or config.rate_limit_per_minute),
            "yes" if token.cio_signing_key else "no",
            "revoked" if token.revoked else "active",
        )
    Console(width=160).print(table)


@tokens.command()
@click.argument("name")
@click.pass_obj
def revoke(config: Config, name: str) -> None:
    """Revoke a token; refused on every worker within 5 seconds."""
    name = name.strip()
    open_application(config).revoke_token(name)
    click.echo(f"Revoked token {name!r}.")


@tokens.command()
@click.argument("name")
@click.pass_obj
def rotate(config: Config, name: str) -> None:
    """Replace a token's value; prints the new one alone on the last line."""
    name = name.strip()
    token = open_application(config).rotate_token(name)
    click.echo(f"Rotated token {name!r}; the old value stops working within 5 seconds.", err=True)
    click.echo(token)
