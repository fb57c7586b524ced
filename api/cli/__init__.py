"""The pm-ops command line. Each module registers its commands on the group."""

import gc
import importlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError

from api.config import Config, ConfigError
from commands.application import TokenError
from commands.sealing import SealingError

COMMAND_MODULES = (
    "serve",
    "tokens",
    "directory",
    "demo",
    "projections",
    "auditing",
    "call",
    "cio",
    "checkpoints",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pm-ops", message="pm-ops %(version)s")
@click.option("--database-url", envvar="OPS_DATABASE_URL", help="Overrides OPS_DATABASE_URL.")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """pm-ops: the Play Money ops webhook service."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = Config.from_env().with_database(database_url)


@contextmanager
def whole_log_job() -> Iterator[None]:
    """For a command that reads the whole log (rebuild, verify): what it builds
    mostly lives to its end, and the cycle collector's passes over all of it, again
    and again, took a quarter of its time. Cycles are rare here: collect seldom."""
    thresholds = gc.get_threshold()
    gc.freeze()  # what start-up made is never garbage
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def main() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"api.cli.{name}").register(cli)
    try:
        status = cli.main(standalone_mode=False)  # ctx.exit(n) comes back as n
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (ConfigError, TokenError, SealingError) as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    except PersistenceError as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        what = (
            "is unreachable" if isinstance(error, OperationalError | InterfaceError) else "refused"
        )
        click.echo(f"Error: the store {what} ({reason}). Check OPS_DATABASE_URL.", err=True)
        sys.exit(3)
    except Exception as error:  # no traceback for users; the log has the detail
        logging.getLogger("pm_ops.cli").debug("unexpected error", exc_info=error)
        click.echo(f"Error: unexpected {type(error).__name__}: {error}", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
