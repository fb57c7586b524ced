"""`pm-ops checkpoints key | list | show | prove | consistency` (SPEC §10): the signed
checkpoints of the log, and proofs an auditor checks with projections/transparency.py."""

import sys
from typing import TYPE_CHECKING

import click
import orjson

from api.bootstrap import bootstrap
from api.config import Config

if TYPE_CHECKING:
    from projections.checkpoints import CheckpointSettings


def register(cli: click.Group) -> None:
    cli.add_command(checkpoints)


@click.group()
def checkpoints() -> None:
    """Signed checkpoints of the log (OPS_CHECKPOINT_KEY), and proofs against them."""


def _settings(config: Config) -> "CheckpointSettings":
    settings = config.checkpoints
    if settings is None:
        raise click.ClickException(
            "checkpoints are off: set OPS_CHECKPOINT_KEY to an Ed25519 private key in PEM "
            "(openssl genpkey -algorithm ed25519 -out FILE)"
        )
    return settings


@checkpoints.command()
@click.pass_obj
def key(config: Config) -> None:
    """Print the verifier key auditors check notes with (alone on the last line)."""
    from projections.checkpoints import KeyUnavailable, Signer

    settings = _settings(config)
    try:
        verifier = Signer(settings.key_path, settings.origin).verifier_key()
    except KeyUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"origin: {settings.origin}", err=True)
    click.echo(verifier)


@checkpoints.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def list_(config: Config, fmt: str) -> None:
    """Every signed checkpoint: its size (events), when, the last position, its root."""
    import base64

    with bootstrap(config) as services:
        rows = services.read_models.tree.checkpoints()
    if fmt == "json":
        for row in rows:
            root = base64.b64encode(row.root).decode()
            record = {"size": row.size, "at": row.at, "position": row.position, "root": root}
            click.echo(orjson.dumps(record).decode())
        return
    if not rows:
        click.echo("No checkpoint has been signed yet.")
        return
    click.echo(f"{'size':>12}  {'signed at (UTC)':<27}  {'up to position':>14}  root")
    for row in rows:
        root = base64.b64encode(row.root).decode()
        click.echo(f"{row.size:>12}  {row.at:<27}  {row.position:>14}  {root}")


@checkpoints.command()
@click.argument("size", type=click.IntRange(min=1))
@click.pass_obj
def show(config: Config, size: int) -> None:
    """Print the signed note of the checkpoint of SIZE events, byte for byte."""
    with bootstrap(config) as services:
        found = services.read_models.tree.checkpoint(size)
    if found is None:
        raise click.ClickException(
            f"no checkpoint of size {size} was signed; `pm-ops checkpoints list` shows them"
        )
    sys.stdout.buffer.write(found.note)


@checkpoints.command()
@click.option("--position", type=click.IntRange(min=1), required=True, help="Log position.")
@click.option("--size", type=click.IntRange(min=1), help="The checkpoint (default the latest).")
@click.pass_obj
def prove(config: Config, position: int, size: int | None) -> None:
    """The inclusion proof of the event at a log position, as JSON: check it with
    `python3 transparency.py inclusion --key KEY FILE` (projections/transparency.py)."""
    from projections.proofs import ProofUnavailable, inclusion_document

    with bootstrap(config) as services:
        try:
            document = inclusion_document(services.app, services.read_models.tree, position, size)
        except ProofUnavailable as error:
            raise click.ClickException(str(error)) from None
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


@checkpoints.command()
@click.option("--from", "old", type=click.IntRange(min=1), required=True, help="Older size.")
@click.option("--to", "new", type=click.IntRange(min=1), required=True, help="Newer size.")
@click.pass_obj
def consistency(config: Config, old: int, new: int) -> None:
    """The consistency proof between two checkpoints, as JSON: check it with
    `python3 transparency.py consistency --key KEY FILE`."""
    from projections.proofs import ProofUnavailable, consistency_document

    with bootstrap(config) as services:
        try:
            document = consistency_document(services.read_models.tree, old, new)
        except ProofUnavailable as error:
            raise click.ClickException(str(error)) from None
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
