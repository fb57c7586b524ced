"""`pm-ops cio failures` and `pm-ops cio resync`: the Customer.io profile sync, by hand."""

import time
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from api.bootstrap import open_application
from api.config import Config


def register(group: click.Group) -> None:
    group.add_command(failures)
    group.add_command(resync)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def failures(config: Config, fmt: str) -> None:
    """Changes Customer.io refused for good, with its answer (retry: cio resync --person ID)."""
    from projections.customerio import Failures
    from projections.store import open_views

    app = open_application(config)
    try:
        store = Failures(open_views(app, config))
        store.create()
        rows = store.listed()
    finally:
        app.close()
    if fmt == "json":
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    if not rows:
        click.echo("No failed Customer.io syncs.")
        return
    table = Table(title=f"Customer.io refused {len(rows)} change(s)")
    for column in ("position", "person", "identifier", "request", "status", "answer", "failed at"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["position"]),
            str(row["person_id"]),
            row["identifier"],
            row["request"],
            str(row["status"]),
            row["answer"],
            row["failed_at"],
        )
    Console().print(table)
    click.echo("Fix the cause, then: pm-ops cio resync --person ID", err=True)


@click.command()
@click.option("--person", type=int, help="One person (also re-sends their refused events).")
@click.option("--all", "everyone", is_flag=True, help="Everyone a call ever changed.")
@click.option("--restart", is_flag=True, help="--all: start over instead of resuming.")
@click.pass_obj
def resync(config: Config, person: int | None, everyone: bool, restart: bool) -> None:
    """Push current values (communities, signup code) to Customer.io profiles.

    For a person whose change Customer.io refused, or after enabling the feed on an
    existing log (the feed does not send the past). Paced by CIO_SYNC_RATE; --all
    resumes where an interrupted run stopped."""
    if (person is None) == (not everyone):
        raise click.UsageError("Give either --person ID or --all.")
    settings = config.customerio
    if settings is None:
        raise click.ClickException(
            "Customer.io is not configured: set CIO_SITE_ID and CIO_TRACK_API_KEY "
            "(Customer.io: Workspace Settings → API credentials, Track API)."
        )
    from projections.customerio_resync import ResyncError
    from projections.store import open_views

    app = open_application(config)
    try:
        views = open_views(app, config)
        if person is not None:
            _resync_person(app, views, settings, person)
        else:
            _resync_all(app, views, settings, restart)
    except ResyncError as error:
        raise click.ClickException(str(error)) from None
    finally:
        app.close()


def _resync_person(app: Any, views: Any, settings: Any, person: int) -> None:
    from projections.customerio_resync import resync_person

    sent, still = resync_person(app, views, settings, person, sleep=time.sleep)
    click.echo(f"Person {person}: profile pushed; {sent} refused event(s) sent again.")
    if still:
        answers = "; ".join(f"{row['status']} {row['answer']}" for row in still)
        raise click.ClickException(
            f"Customer.io still refuses {len(still)} event(s) of person {person}: {answers}"
        )


def _resync_all(app: Any, views: Any, settings: Any, restart: bool) -> None:
    from projections.customerio_resync import ResyncAll

    job = ResyncAll(app, views, settings)
    if not restart and job.resume_after() is not None:
        click.echo("Resuming the interrupted resync (--restart starts over).", err=True)
    refused = []
    columns = (TextColumn("resync"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("resync", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        pushed = 0
        for sync, refusal in job.run(restart=restart, sleep=time.sleep, progress=advance):
            pushed += 1
            if refusal is not None:
                refused.append(f"person {sync.person_id}: {refusal.answer.status} ")
                refused[-1] += refusal.answer.text
    click.echo(f"{pushed} profile(s) pushed to Customer.io.")
    if refused:
        raise click.ClickException(
            f"Customer.io refused {len(refused)} profile(s):\n  " + "\n  ".join(refused)
        )
