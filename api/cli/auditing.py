"""For auditors: `pm-ops audit`, `history`, `state` and `verify`."""

import csv
import io
import sys
from datetime import datetime, timedelta
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from api.bootstrap import open_application
from api.config import Config


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
        from projections.model import parse_time

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


FORMATS = click.Choice(["table", "json", "csv"])


def _emit(rows: list[dict[str, Any]], columns: list[str], fmt: str, title: str) -> None:
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
    else:
        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row[c]) for c in columns))
        Console(width=max(Console().width, 160)).print(table)


def _people_who_had(views: Any, address: str) -> set[int]:
    """Everyone who has had this email: now, at an audited change, or before one.
    Compared in Python with the service's own normalisation (SQLite's LOWER() only
    folds ASCII)."""
    from aggregates import normalise_email

    audit, subjects = views.table("ops_audit"), views.table("ops_audit_subjects")
    with views.read() as cursor:
        views.execute(
            cursor,
            f"SELECT person_id, email FROM {subjects} WHERE person_id IS NOT NULL "
            f"UNION SELECT person_id, email FROM {audit} WHERE person_id IS NOT NULL "
            f"UNION SELECT person_id, previous_value FROM {audit} "
            "WHERE person_id IS NOT NULL AND operation = 'change-email'",
        )
        return {
            row["person_id"]
            for row in cursor.fetchall()
            if row["email"] and normalise_email(row["email"]) == address
        }


def _warn_lag(app: Any, config: Config, name: str) -> int:
    from projections.store import open_views

    views = open_views(app, config)
    position = views.position(name)
    lag = (app.recorder.max_notification_id() or 0) - position
    if lag > 0:
        click.echo(
            f"note: the {name} projection is {lag} event(s) behind the log "
            "(is `pm-ops projections run` or `pm-ops serve` running?)",
            err=True,
        )
    return position


@click.command()
@click.option("--person", type=int, help="Play Money person ID.")
@click.option("--email", help="Entries of the people who had this email.")
@click.option("--community", type=int, help="Community ID.")
@click.option("--actor", help='e.g. "Customer.io" or "Marketing Ops".')
@click.option("--token", help="Token name.")
@click.option("--workflow", help="Originating workflow (X-Ops-Workflow).")
@click.option("--operation", help="add-member, set-code, change-email, issue-token, ...")
@click.option("--since", type=Moment(), help="From this time (ISO 8601, inclusive).")
@click.option(
    "--until",
    type=Moment(date_means_end_of_day=True),
    help="Up to this time (ISO 8601, inclusive; a date alone means the whole day).",
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
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
    fmt: str,
) -> None:
    """The audit trail: one entry per change, who made it and why.

    Output as a table (default), JSON lines (--format json) or CSV (--format csv)."""
    from aggregates import normalise_email
    from projections.model import AUDIT_COLUMNS, iso
    from projections.store import open_views
    from projections.tables import AuditProjection

    app = open_application(config)
    try:
        views = open_views(app, config)
        AuditProjection(app, views).create()
        _warn_lag(app, config, "audit")
        table = views.table("ops_audit")
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("person_id", person),
            ("community_id", community),
            ("token", token),
            ("operation", operation),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        for column, value in (("actor", actor), ("workflow", workflow)):
            if value is not None:  # typed by people: "customer.io" means Customer.io
                where.append(f"LOWER({column}) = LOWER(%s)")
                params.append(value)
        if email is not None:
            people = _people_who_had(views, normalise_email(email))
            where.append(f"person_id IN ({', '.join(['%s'] * len(people))})" if people else "1 = 0")
            params += sorted(people)
        if since is not None:
            where.append("at >= %s")
            params.append(iso(since))
        if until is not None:
            where.append("at <= %s")
            params.append(iso(until))
        statement = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {table}"
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += " ORDER BY position"
        with views.read() as cursor:
            views.execute(cursor, statement, params)
            rows = [{c: r[c] for c in AUDIT_COLUMNS} for r in cursor.fetchall()]
    finally:
        app.close()
    columns = list(AUDIT_COLUMNS)
    if fmt == "table":  # the full record is in --format json / csv
        hidden = {"event", "email", "request_id", "source_address"}
        columns = [c for c in columns if c not in hidden]
    _emit(rows, columns, fmt, f"Audit trail ({len(rows)} entries)")


@click.command()
@click.option("--person", required=True, type=int, help="Play Money person ID.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_obj
def history(config: Config, person: int, fmt: str) -> None:
    """Every event of one person, straight from the log, in order."""
    from aggregates import Person
    from projections.model import event_name, iso

    app = open_application(config)
    try:
        stored = app.recorder.select_events(Person.create_id(person))
        events = [app.mapper.to_domain_event(s) for s in stored]
    finally:
        app.close()
    if not events:
        raise click.ClickException(f"No person with Play Money ID {person} in the log.")
    rows = []
    hidden = {"originator_id", "originator_version", "timestamp", "meta", "originator_topic"}
    for event in events:
        meta = getattr(event, "meta", None) or {}
        values = {k: v for k, v in vars(event).items() if k not in hidden}
        rows.append(
            {
                "version": event.originator_version,
                "at": iso(event.timestamp),
                "event": event_name(event),
                "values": ", ".join(f"{k}={v!r}" for k, v in values.items()),
                "actor": meta.get("actor"),
                "token": meta.get("token"),
                "workflow": meta.get("workflow"),
                "idempotency_key": meta.get("idempotency_key"),
                "request_id": meta.get("request_id"),
                "source_address": meta.get("source_address"),
            }
        )
    columns = list(rows[0])
    _emit(rows, columns, fmt, f"History of person {person} ({len(rows)} events)")


@click.command()
@click.option(
    "--as-of", "as_of", type=Moment(), help="Replay the log up to this instant (ISO 8601)."
)
@click.option("--person", type=int, help="One person: email, signup code, communities.")
@click.option("--community", type=int, help="The members of one community.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_obj
def state(
    config: Config, as_of: datetime | None, person: int | None, community: int | None, fmt: str
) -> None:
    """Memberships and signup codes: now (from the state projection) or, with
    --as-of, as they were at that instant (replayed from the log)."""
    from projections.model import iso, replay

    app = open_application(config)
    try:
        if as_of is not None:
            derived = replay(app, until=as_of)
            source = f"replayed from the log as of {iso(as_of)}"
        else:
            derived = _load_state(app, config)
            source = f"state projection at position {derived.position}"
    finally:
        app.close()
    people = sorted(derived.people.values(), key=lambda p: p.person_id)
    if person is not None:
        people = [p for p in people if p.person_id == person]
        if not people:
            raise click.ClickException(f"No person with Play Money ID {person} ({source}).")
    if community is not None:
        people = [p for p in people if community in p.communities]
    rows = [
        {
            "person_id": p.person_id,
            "email": p.email,
            "signup_code": p.signup_code,
            "communities": " ".join(str(c) for c in sorted(p.communities)),
        }
        for p in people
    ]
    title = f"{len(rows)} people — {source}"
    if community is not None:
        name = derived.communities.get(community)
        title = f"Community {community} ({name or 'unknown'}): {title}"
    _emit(rows, ["person_id", "email", "signup_code", "communities"], fmt, title)


def _load_state(app: Any, config: Config) -> Any:
    from projections.model import Derived, PersonState
    from projections.store import open_views
    from projections.tables import StateProjection

    views = open_views(app, config)
    StateProjection(app, views).create()
    _warn_lag(app, config, "state")
    t = views.table
    derived = Derived()
    with views.read() as cursor:
        derived.position = views.position("state", cursor)
        views.execute(cursor, f"SELECT person_id, email, signup_code FROM {t('ops_state_people')}")
        for r in cursor.fetchall():
            derived.people[r["person_id"]] = PersonState(
                r["person_id"], r["email"], r["signup_code"]
            )
        views.execute(cursor, f"SELECT person_id, community_id FROM {t('ops_state_memberships')}")
        for r in cursor.fetchall():
            if r["person_id"] in derived.people:
                derived.people[r["person_id"]].communities.add(r["community_id"])
        views.execute(cursor, f"SELECT community_id, name FROM {t('ops_state_communities')}")
        derived.communities = {r["community_id"]: r["name"] for r in cursor.fetchall()}
    return derived


@click.command()
@click.option(
    "--no-checkpoint",
    is_flag=True,
    help="Do not chain events the chain projection has not reached yet.",
)
@click.pass_obj
def verify(config: Config, no_checkpoint: bool) -> None:
    """Re-derive state and audit from the log and compare them with the projections;
    check the log's hash chain. Exits 1 on any difference."""
    from projections.verify import verify as run_verify

    app = open_application(config)
    try:
        report = run_verify(app, config, checkpoint=not no_checkpoint)
    finally:
        app.close()
    for note in report.notes:
        click.echo(note)
    if report.ok:
        click.echo("verify: OK — the projections match the log and the hash chain is intact.")
        return
    for finding in report.findings[:200]:
        click.echo(str(finding), err=True)
    if len(report.findings) > 200:
        click.echo(f"… and {len(report.findings) - 200} more", err=True)
    click.echo(f"verify: FAILED — {len(report.findings)} difference(s).", err=True)
    sys.exit(1)
