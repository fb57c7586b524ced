"""`pm-ops projections status | rebuild NAME | run`: for engineers."""

import os
import signal
import threading
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from api.bootstrap import bootstrap
from api.cli import whole_log_job
from api.config import Config
from api.lifeline import die_with_parent, expected_parent, parent_alive
from projections import NAMES
from projections.read_models import DB_PROJECTIONS

# The nice value a rebuild runs at (at least): it runs beside a live API, whose calls
# kept 0.58 of their pace under a rebuild at full priority and 0.71-0.97 under this.
REBUILD_NICENESS = 10


def register(cli: click.Group) -> None:
    cli.add_command(projections)


@click.group()
def projections() -> None:
    """Read models and outbound feeds built from the event log (state, audit, chain,
    activity, slack, customerio)."""


@projections.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def status(config: Config, fmt: str) -> None:
    """Each projection's position, the head of the log, the lag and whether a runner is active."""
    from projections import status as projection_status

    with bootstrap(config) as services:
        rows = projection_status(services.app, config)
    if fmt == "json":
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    table = Table(title="Projections")
    for column in ("projection", "position", "head", "lag", "runner", "version"):
        table.add_column(
            column, justify="right" if column in ("position", "head", "lag") else "left"
        )
    for row in rows:
        runner = row["runner"] + (" (paused for rebuild)" if row["paused"] else "")
        if row.get("failures"):
            runner += f" · {row['failures']} failed sync(s): pm-ops cio failures"
        if row.get("stuck"):
            runner += f" · STUCK: {row['stuck']}"
        table.add_row(
            row["projection"],
            str(row["position"]),
            str(row["head"]),
            str(row["lag"]),
            runner,
            _version(row),
        )
    Console().print(table)


def _version(row: dict[str, Any]) -> str:
    if row["version"] is None:
        return ""
    if row["rebuild_pending"]:
        return f"{row['version']} (rebuild to {row['code_version']} when a runner starts)"
    return str(row["version"])


@projections.command()
@click.argument("name", type=click.Choice(list(DB_PROJECTIONS)), required=False)
@click.option(
    "--all", "every", is_flag=True, help="Every database projection kept here, one after another."
)
@click.option(
    "--wait",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for an active runner to stand by for the swap.",
)
@click.option(
    "--accept-current-log",
    is_flag=True,
    help="chain only: rebuild even though the log was altered (makes it the new baseline).",
)
@click.option(
    "--nice",
    "niceness",
    default=REBUILD_NICENESS,
    show_default=True,
    type=click.IntRange(0, 19),
    help="Run at this nice value at least (as nice(1)): the API keeps its pace meanwhile.",
)
@click.pass_obj
def rebuild(
    config: Config,
    name: str | None,
    every: bool,
    wait: float,
    accept_current_log: bool,
    niceness: int,
) -> None:
    """Replay the whole log into new tables beside the NAME projection's, then swap them in.

    The API keeps serving and readers keep reading the live tables until the swap, which
    is one transaction; an active runner keeps them current meanwhile and carries on from
    the swap. Needs room for a second copy of the projection's tables. Interrupted, the
    next rebuild resumes where it stopped; a second rebuild at the same time is refused."""
    from projections import RebuildError, rebuildable

    if every == (name is not None):
        raise click.UsageError("name one projection, or pass --all")
    # A rebuild is background work beside a live API: on a busy machine it gives way.
    if niceness > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    try:
        with bootstrap(config) as services, whole_log_job():
            for each in rebuildable(services.app, config) if every else [name]:
                assert each is not None
                position = _rebuild_one(services.app, config, each, wait, accept_current_log)
                click.echo(f"{each} rebuilt up to position {position}.")
    except RebuildError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo(
            "interrupted: the live tables are unchanged; running the rebuild again resumes it",
            err=True,
        )
        raise SystemExit(130) from None


def _rebuild_one(app: Any, config: Config, name: str, wait: float, accept: bool) -> int:
    """One projection's rebuild, with a progress bar on stderr."""
    from projections import rebuild as rebuild_projection

    columns = (
        TextColumn(f"rebuilding {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(name, total=app.recorder.max_notification_id() or 0)

        def advance(position: int, head: int) -> None:
            progress.update(task, completed=position, total=max(head, position))

        position = rebuild_projection(
            app,
            config,
            name,
            progress=advance,
            wait_seconds=wait,
            accept_current_log=accept,
        )
        progress.update(task, completed=position, total=position)
    return position


@projections.command()
@click.option(
    "--only",
    "names",
    multiple=True,
    type=click.Choice(list(NAMES)),
    help="Run only these projections (repeat); default all.",
)
@click.option("--once", is_flag=True, help="Catch up to the head of the log, then exit.")
@click.option("--poll", default=0.5, show_default=True, type=click.FloatRange(min=0.05))
@click.pass_obj
def run(config: Config, names: tuple[str, ...], once: bool, poll: float) -> None:
    """Run the projections in this process (a second copy stands by and takes over)."""
    from projections import NAMES, RebuildError, catch_up_once, start_projections

    selected = names or NAMES
    if once:
        with bootstrap(config) as services:
            try:
                done = catch_up_once(services.app, config, selected)
            except RebuildError as error:
                raise click.ClickException(str(error)) from None
        for name, count in done.items():
            click.echo(f"{name}: processed {count} event(s)")
        return
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = expected_parent()  # set when serve started us: we die with it
    if parent is not None:
        die_with_parent(parent)
    gauges = _Gauges.create()
    with bootstrap(config) as services:
        running = start_projections(
            config,
            selected,
            app=services.app,
            poll_seconds=poll,
            on_lag=gauges.report if gauges else None,
            on_alarm=gauges.alarm if gauges else None,
        )
        if gauges is not None:
            gauges.followers = {runner.name: runner.follower for runner in running.runners}
        click.echo(f"projections running: {', '.join(selected)} (Ctrl-C to stop)", err=True)
        try:
            while not stopping.wait(1.0):
                if parent is not None and not parent_alive(parent):
                    break
        finally:
            running.stop()


class _Gauges:
    """Lag and a feed's failed syncs, reported to /metrics when run beside the API
    (serve shares its metrics directory)."""

    def __init__(self) -> None:
        from api.metrics import Metrics

        metrics = Metrics()
        self.lag = metrics.projection_lag
        self.failures = metrics.feed_failures
        self.alarms = metrics.checkpoint_alarms
        self.followers: dict[str, Any] = {}

    @classmethod
    def create(cls) -> "_Gauges | None":
        return cls() if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else None

    def alarm(self, witness: str) -> None:
        self.alarms.labels(witness=witness).inc()

    def report(self, name: str, lag: int) -> None:
        self.lag.labels(projection=name).set(lag)
        count = getattr(getattr(self.followers.get(name), "sink", None), "failed_syncs", None)
        if count is not None:
            self.failures.labels(feed=name).set(count())
