"""For auditors: `pm-ops audit`, `history`, `state` and `verify`.

Everything is read through the projections' typed views (projections/read_models.py);
this module only turns their rows into output."""

import csv
import io
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from api.bootstrap import bootstrap
from api.cli import whole_log_job
from api.config import Config
from projections.audit import OPERATION_NAMES as AUDITED

if TYPE_CHECKING:
    from projections.verify import Report
    from projections.verify_checkpoints import Witnessed


def register(cli: click.Group) -> None:
    for command in (audit, history, state, verify):
        cli.add_command(command)


class Moment(click.ParamType):
    name = "TIME"

    def __init__(self, *, date_means_end_of_day: bool = False) -> None:
        # "--until 2026-11-24" means to the end of that day, not its first instant.
        self.date_means_end_of_day = date_means_end_of_day

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        from projections.times import parse_time

        try:
            moment = parse_time(str(value))
            if self.date_means_end_of_day and len(str(value).strip()) == len("2026-11-24"):
                moment += timedelta(days=1, microseconds=-1)
            return moment
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 time, e.g. 2025-03-01T14:30:00Z or 2025-03-01",
                param,
                ctx,
            )


FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "tsv", "json", "csv"]),
    default=None,
    help="Default: a table on a terminal, tab-separated lines (tsv) when piped.",
)


def _resolve_format(fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    return "table" if sys.stdout.isatty() else "tsv"


def _tsv_field(value: Any) -> str:
    """PostgreSQL COPY's text escapes: a value never splits a line or a column, and
    the original can always be recovered."""
    if value is None:
        return ""
    return (
        str(value)
        .replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def _emit(
    rows: Iterable[dict[str, Any]],
    columns: list[str],
    fmt: str,
    title: str,
    table_columns: list[str] | None = None,
) -> None:
    """json: one object per line; csv: a header and a row per record; tsv: the same
    with tabs, never quoted, one record per line whatever a value holds (for grep,
    cut, awk); table: a rich table (for people at a terminal; may wrap values)."""
    if fmt == "json":
        for row in rows:
            click.echo(orjson.dumps(row).decode())
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
        click.echo(buffer.getvalue(), nl=False)
    elif fmt == "tsv":
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(_tsv_field(row.get(c)) for c in columns))
    else:
        table = Table(title=title)
        shown = table_columns or columns
        for column in shown:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row[c]) for c in shown))
        Console(width=max(Console().width, 160)).print(table)


def _note(message: str | None) -> None:
    if message is not None:
        click.echo(f"note: {message}", err=True)


@click.command()
@click.option("--person", type=int, help="Play Money person ID.")
@click.option("--email", help="Entries of the people who had this email.")
@click.option("--community", type=int, help="Community ID.")
@click.option("--actor", help='e.g. "Customer.io" or "Marketing Ops".')
@click.option("--token", help="Token name.")
@click.option("--workflow", help="Originating workflow (X-Ops-Workflow).")
@click.option("--operation", help=f"One of {', '.join(AUDITED)}.")
@click.option("--since", type=Moment(), help="From this time (ISO 8601, inclusive).")
@click.option(
    "--until",
    type=Moment(date_means_end_of_day=True),
    help="Up to this time (ISO 8601, inclusive; a date alone means the whole day).",
)
@FORMAT_OPTION
@click.pass_obj
def audit(
    config: Config,
    person: int | None,
    email: str | None,
    community: int | None,
    actor: str | None,
    token: str | None,
    workflow: str | None,
    operation: str | None,
    since: datetime | None,
    until: datetime | None,
    fmt: str | None,
) -> None:
    """The audit trail: one entry per change, who made it and why.

    Output as a table on a terminal, tab-separated lines when piped, JSON lines
    (--format json) or CSV (--format csv)."""
    from projections.audit import AUDIT_COLUMNS, AuditFilters

    fmt = _resolve_format(fmt)
    filters = AuditFilters(
        person, email, community, actor, token, workflow, operation, since, until
    )
    with bootstrap(config) as services:
        views = services.read_models
        _note(views.notice("audit"))
        if email is not None and views.projection("audit").upgrade_pending():
            raise click.ClickException(
                "--email needs the audit projection of this release; it is rebuilt when "
                "`pm-ops projections run` (or `pm-ops serve`) starts"
            )
        rows = [entry.as_dict() for entry in views.audit.entries(filters)]
    columns = list(AUDIT_COLUMNS)
    hidden = {"event", "email", "request_id", "source_address"}  # in the table only
    _emit(
        rows,
        columns,
        fmt,
        f"Audit trail ({len(rows)} entries)",
        table_columns=[c for c in columns if c not in hidden],
    )


@click.command()
@click.option("--person", required=True, type=int, help="Play Money person ID.")
@FORMAT_OPTION
@click.pass_obj
def history(config: Config, person: int, fmt: str | None) -> None:
    """Every event of one person, straight from the log, in order."""
    from projections.history import HISTORY_COLUMNS

    fmt = _resolve_format(fmt)
    with bootstrap(config) as services:
        entries = services.read_models.history.person(person)
    if not entries:
        raise click.ClickException(f"No person with Play Money ID {person} in the log.")
    rows = [entry.as_dict() for entry in entries]
    title = f"History of person {person} ({len(rows)} events)"
    _emit(rows, list(HISTORY_COLUMNS), fmt, title)


@click.command()
@click.option(
    "--as-of", "as_of", type=Moment(), help="Replay the log up to this instant (ISO 8601)."
)
@click.option("--person", type=int, help="One person: email, signup code, communities.")
@click.option("--community", type=int, help="The members of one community.")
@FORMAT_OPTION
@click.pass_obj
def state(
    config: Config,
    as_of: datetime | None,
    person: int | None,
    community: int | None,
    fmt: str | None,
) -> None:
    """Memberships and signup codes: now (from the state projection) or, with
    --as-of, as they were at that instant (replayed from the log)."""
    from projections.state import replayed_state
    from projections.times import iso

    fmt = _resolve_format(fmt)
    with bootstrap(config) as services:
        views = services.read_models
        if as_of is not None:
            snapshot = replayed_state(services.app, until=as_of)
            source = f"replayed from the log as of {iso(as_of)}"
        else:
            _note(views.notice("state"))
            snapshot = views.state.snapshot()
            source = f"state projection at position {snapshot.position}"
    people = snapshot.people
    if person is not None:
        people = tuple(p for p in people if p.person_id == person)
        if not people:
            raise click.ClickException(f"No person with Play Money ID {person} ({source}).")
    if community is not None:
        people = tuple(p for p in people if community in p.communities)
    rows = [
        {
            "person_id": p.person_id,
            "email": p.email,
            "signup_code": p.signup_code,
            "communities": " ".join(str(c) for c in p.communities),
        }
        for p in people
    ]
    title = f"{len(rows)} people — {source}"
    if community is not None:
        name = snapshot.communities.get(community)
        title = f"Community {community} ({name or 'unknown'}): {title}"
    _emit(rows, ["person_id", "email", "signup_code", "communities"], fmt, title)


@click.command()
@click.option(
    "--no-chain-ahead",
    "--no-checkpoint",  # its name before signed checkpoints existed
    "no_chain_ahead",
    is_flag=True,
    help="Do not chain events the chain projection has not reached yet.",
)
@click.option(
    "--checkpoints",
    "locations",
    multiple=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="Also check the signed checkpoints kept there (repeat); every configured witness "
    "(OPS_CHECKPOINT_DIR, OPS_CHECKPOINT_S3) is checked anyway.",
)
@click.option(
    "--key",
    "verifier_key",
    metavar="VERIFIER-KEY",
    help="The checkpoints' verifier key (`pm-ops checkpoints key` prints it); default the "
    "public half of OPS_CHECKPOINT_KEY.",
)
@click.pass_obj
def verify(
    config: Config, no_chain_ahead: bool, locations: tuple[str, ...], verifier_key: str | None
) -> None:
    """Re-derive every read model from the log and compare them with the projections;
    check the log's hash chain, and the log against its signed checkpoints where they
    are kept. Exits 1 on any difference."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from projections.verify import verify as verify_in_turn
    from projections.verify import verify_read_models

    chain_ahead = not no_chain_ahead
    witnessed = _witnessed(config, locations, verifier_key)
    with bootstrap(config) as services, whole_log_job():
        if not config.is_postgres:  # one SQLite file (or memory) is this process's own
            report = verify_in_turn(
                services.read_models, config.store, chain_ahead=chain_ahead, witnessed=witnessed
            )
        else:
            # The two halves read the whole log each, on a core each: side by side
            # they take as long as the longer one (a thread would share our GIL).
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as helper:
                chain_half = helper.submit(_verify_chain_apart, config, chain_ahead, witnessed)
                models = verify_read_models(services.read_models)
                report = chain_half.result().then(models)
    for note in report.notes:
        click.echo(note)
    if report.ok:
        checked = " and its signed checkpoints" if witnessed else ""
        click.echo(
            f"verify: OK — the projections match the log and the hash chain is intact{checked}."
        )
        return
    for finding in report.findings[:200]:
        click.echo(str(finding), err=True)
    if len(report.findings) > 200:
        click.echo(f"… and {len(report.findings) - 200} more", err=True)
    click.echo(f"verify: FAILED — {len(report.findings)} difference(s).", err=True)
    sys.exit(1)


def _verify_chain_apart(
    config: Config, chain_ahead: bool, witnessed: "Witnessed | None"
) -> "Report":
    """`verify`'s chain half, in a process of its own; the tables exist already."""
    from projections.verify import verify_chain

    with bootstrap(config, create_tables=False) as services, whole_log_job():
        return verify_chain(
            services.read_models, config.store, chain_ahead=chain_ahead, witnessed=witnessed
        )


def _witnessed(
    config: Config, locations: tuple[str, ...], verifier_key: str | None
) -> "Witnessed | None":
    """Where the published checkpoints are to be read, and the key that must sign them."""
    from projections.checkpoints import KeyUnavailable, Signer
    from projections.transparency import NoteError, parse_verifier_key
    from projections.verify_checkpoints import Witnessed

    settings = config.checkpoints
    configured = ()
    if settings is not None:
        configured = tuple(p for p in (settings.directory, settings.s3_url) if p)
    every = tuple(dict.fromkeys((*configured, *locations)))
    if not every:
        return None
    if verifier_key is None:
        if settings is None:
            raise click.ClickException(
                "give --key with the checkpoints' verifier key (`pm-ops checkpoints key` "
                "prints it where OPS_CHECKPOINT_KEY is set)"
            )
        try:
            verifier_key = Signer(settings.key_path, settings.origin).verifier_key()
        except KeyUnavailable as error:
            raise click.ClickException(str(error)) from None
    try:
        parse_verifier_key(verifier_key)
    except NoteError as error:
        raise click.ClickException(f"--key: {error}") from None
    for location in every:
        if not location.startswith("s3://") and not Path(location).is_dir():
            raise click.ClickException(f"--checkpoints {location}: no such directory")
    endpoint = settings.s3_endpoint if settings is not None else None
    return Witnessed(every, verifier_key, settings.origin if settings else None, endpoint)
