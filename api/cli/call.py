"""`pm-ops call`: the script client (SPEC §6) on top of api.client."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from api.client import (
    EXIT_FIX_INPUT,
    EXIT_OK,
    EXIT_TOKEN,
    MembershipResult,
    OpsClient,
    OpsError,
    SignupCodeResult,
)

DEFAULT_RATE = 540  # calls a minute: a little under the default limit of 600
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes (one per row of the guide's "who handles it" table):
  0    success (including "already a member" / "unchanged")
  1    fix your input: 404 no such person or community, 409 shared
       email (send the Play Money ID), 422 bad value, bad options
  2    token problem (401 invalid/rotated, 403 no permission or
       blocked): tell engineering
  3    platform unhealthy or unreachable (5xx, connection refused,
       timeout) after every retry: tell engineering
  4    still rate limited (429) after every retry: slow down
  130  interrupted (Ctrl-C): re-run the same command to resume
"""


class _UsageExit1:
    """Bad options are "fix your input" (1), not click's 2, which means a token problem here."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except click.UsageError as error:
            error.exit_code = EXIT_FIX_INPUT
            raise


class _Command(_UsageExit1, click.Command):
    pass


class _Group(_UsageExit1, click.Group):
    command_class = _Command


def register(cli: click.Group) -> None:
    cli.add_command(call)


@click.group(cls=_Group, epilog=EXIT_CODES_HELP)
def call() -> None:
    """Run the two operations from a terminal or a script (the script client).

    \b
    Reads OPS_URL (the service's base URL) and OPS_TOKEN (your script
    token from engineering); --url/--token override them. Prefer the
    environment variable for the token: a flag is visible in `ps` and
    stays in your shell history. The token is never printed.

    Each call sends an idempotency key (fresh, or --key) and retries
    429, 502/503/504, timeouts and connection errors with backoff,
    always with the same key, so a retry never runs anything twice.
    """


def _positive(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a whole number above 0, not {value}")
    return value


def common_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--person",
            "person_id",
            type=int,
            callback=_positive,
            help="The person's Play Money ID.",
        ),
        click.option(
            "--email", help="The person's email instead of --person (for profiles without an ID)."
        ),
        click.option(
            "--from",
            "from_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="CSV file: one call per row (personId or email column).",
        ),
        click.option(
            "--url",
            envvar="OPS_URL",
            metavar="URL",
            help="Base URL of pm-ops, e.g. https://app.letsplaymoney.com [env OPS_URL].",
        ),
        click.option(
            "--token",
            envvar="OPS_TOKEN",
            metavar="TOKEN",
            help="Your script token [env OPS_TOKEN; prefer the variable].",
        ),
        click.option(
            "--key",
            help="Idempotency key for a single call (default: a fresh one). Re-use it to "
            "retry a call safely.",
        ),
        click.option("--workflow", help="Recorded in the audit trail as the originating workflow."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of words."),
        click.option(
            "--retries",
            type=click.IntRange(min=0, max=20),
            default=5,
            show_default=True,
            help="Retries of a transient failure (429, 5xx, unreachable), same key each time.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=1),
            default=30,
            show_default=True,
            help="Seconds to wait for each answer.",
        ),
        click.option(
            "--rate",
            type=click.IntRange(min=1),
            default=DEFAULT_RATE,
            show_default=True,
            help="With --from: at most this many calls a minute (the default token limit is 600).",
        ),
        click.option(
            "--failed",
            "failed_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="With --from: where to write the failed rows (default FILE.failed.csv).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@call.command("add-member", epilog=EXIT_CODES_HELP)
@click.option(
    "--community",
    "community_id",
    type=int,
    callback=_positive,
    help="Community ID (the number in /admin/communities/<ID>). With --from, a "
    "communityId column may give it per row instead.",
)
@common_options
def add_member(community_id: int | None, **options: Any) -> None:
    """Add a person to a community.

    \b
      pm-ops call add-member --person 123 --community 42
      pm-ops call add-member --email jane@example.com --community 42
      pm-ops call add-member --from people.csv --community 42

    "Already a member" is a success: nothing changed, and it is safe to
    repeat.
    """
    run(Operation.add_member(community_id), options)


@call.command("set-code", epilog=EXIT_CODES_HELP)
@click.option("--code", help="The signup code to set, e.g. VC-Partners.")
@click.option("--clear", is_flag=True, help="Clear the code (back to the platform default).")
@common_options
def set_code(code: str | None, clear: bool, **options: Any) -> None:
    """Set (or, with --clear, clear) a person's signup code.

    \b
      pm-ops call set-code --person 123 --code VC-Partners
      pm-ops call set-code --person 123 --clear
      pm-ops call set-code --from codes.csv          (personId,code columns)
      pm-ops call set-code --from people.csv --code VC-Partners

    Clearing must be said explicitly with --clear: an empty code is an
    error, never a silent clear.
    """
    if code is not None and clear:
        usage("give either --code or --clear, not both")
    run(Operation.set_code(code, clear), options)


# --- what to call ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    person_id: int | None
    email: str | None


@dataclass(frozen=True)
class Operation:
    name: str
    community_id: int | None = None
    code: str | None = None
    clear: bool = False

    @classmethod
    def add_member(cls, community_id: int | None) -> Operation:
        return cls("add-member", community_id=community_id)

    @classmethod
    def set_code(cls, code: str | None, clear: bool) -> Operation:
        return cls("set-code", code=code, clear=clear)

    @property
    def fixed_value_given(self) -> bool:
        return self.community_id is not None if self.name == "add-member" else self.is_code_given

    @property
    def is_code_given(self) -> bool:
        return self.code is not None or self.clear

    def invoke(
        self, client: OpsClient, target: Target, key: str | None, row: dict[str, str] | None = None
    ) -> MembershipResult | SignupCodeResult:
        person = {"person_id": target.person_id, "email": target.email}
        if self.name == "add-member":
            community = self.community_id
            if community is None:
                assert row is not None
                community = int(row["communityId"])
            return client.add_member(community_id=community, key=key, **person)
        code = None if self.clear else self.code
        if row is not None and not self.is_code_given:
            code = row["code"]
        return client.set_code(code=code, key=key, **person)

    def command_line(self, from_file: Path) -> str:
        words = ["pm-ops", "call", self.name, "--from", str(from_file)]
        if self.community_id is not None:
            words += ["--community", str(self.community_id)]
        if self.code is not None:
            words += ["--code", self.code]
        if self.clear:
            words.append("--clear")
        return shlex.join(words)

    def fingerprint(self) -> str:
        """What, besides the file, decides the bodies: part of every --from key."""
        return json.dumps([self.name, self.community_id, self.code, self.clear])


def usage(message: str) -> NoReturn:
    error = click.UsageError(message)
    error.exit_code = EXIT_FIX_INPUT
    raise error


# --- running -------------------------------------------------------------------------


def run(operation: Operation, options: dict[str, Any]) -> None:
    from_file: Path | None = options["from_file"]
    person_id, email = options["person_id"], options["email"]
    if from_file is not None:
        if person_id is not None or email is not None or options["key"]:
            usage("--from takes the people from the file; drop --person/--email/--key")
    elif (person_id is None) == (email is None):
        usage("give exactly one of --person ID or --email E (or --from FILE.csv)")
    elif not operation.fixed_value_given:
        usage(
            "give --community ID"
            if operation.name == "add-member"
            else "give --code CODE, or --clear to reset the code to the platform default"
        )
    client = make_client(options)
    if from_file is not None:
        run_file(client, operation, from_file, options)
        return
    try:
        result = operation.invoke(client, Target(person_id, email), options["key"])
    except OpsError as error:
        report_error(error, options["as_json"])
        sys.exit(error.exit_code)
    if options["as_json"]:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(result.describe())


def make_client(options: dict[str, Any]) -> OpsClient:
    url, token = (options["url"] or "").strip(), (options["token"] or "").strip()
    if not url:
        usage(
            "set OPS_URL (or --url) to the base URL of pm-ops, e.g. https://app.letsplaymoney.com"
        )
    if not re.match(r"^https?://[^/\s]+", url):
        usage(f"the URL must look like https://host[:port], not {url!r}")
    if not token:
        click.echo(
            "Error: no token. Set OPS_TOKEN to the script token engineering gave you.", err=True
        )
        sys.exit(EXIT_TOKEN)
    max_attempts = options["retries"] + 1

    def on_retry(error: OpsError, attempt: int, delay: float) -> None:
        what = f"{error.status} {error.code}" if error.status else error.code
        message = (
            f"{what}: {error.detail} Retrying in {delay:.1f} s with the same idempotency key "
            f"(attempt {attempt} of {max_attempts})."
        )
        echo_err(message)

    return OpsClient(
        url,
        token,
        retries=options["retries"],
        timeout=options["timeout"],
        workflow=options["workflow"],
        on_retry=on_retry,
    )


_err_console: Any = None  # the progress console while a --from run is on screen


def echo_err(message: str) -> None:
    if _err_console is not None:
        _err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    else:
        click.echo(message, err=True)


def report_error(error: OpsError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(error.as_dict()))
        return
    status = f"{error.status} " if error.status is not None else ""
    click.echo(f"Error: {status}{error.code}: {error.detail}", err=True)
    click.echo(error.who_fixes, err=True)
    if error.exit_code not in (EXIT_FIX_INPUT, EXIT_TOKEN):
        click.echo(
            f"To retry later without any risk of running it twice: --key {error.idempotency_key}",
            err=True,
        )


# --- --from FILE.csv -----------------------------------------------------------------

COLUMN_ALIASES = {
    "personid": "personId",
    "person_id": "personId",
    "email": "email",
    "communityid": "communityId",
    "community_id": "communityId",
    "code": "code",
}
ERROR_COLUMNS = ("error_status", "error_code", "error_detail")


@dataclass
class Row:
    line: int
    raw: dict[str, str]  # as in the file, for the failures CSV
    values: dict[str, str]  # by canonical column name
    target: Target | None = None
    problem: str | None = None


def read_rows(path: Path, operation: Operation) -> tuple[list[str], list[Row], str]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        usage(f"{path} is not UTF-8 text; save it as CSV UTF-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h for h in (reader.fieldnames or []) if h is not None]
    columns = {
        COLUMN_ALIASES[h.strip().lower()]: h for h in header if h.strip().lower() in COLUMN_ALIASES
    }
    if "personId" not in columns and "email" not in columns:
        usage(
            f"{path} needs a personId or email column (header row), found: {', '.join(header) or 'nothing'}"
        )
    if (
        operation.name == "add-member"
        and operation.community_id is None
        and "communityId" not in columns
    ):
        usage(f"give --community ID, or a communityId column in {path}")
    if operation.name == "set-code":
        if operation.is_code_given and "code" in columns:
            usage(f"{path} has a code column: drop --code/--clear, or remove the column")
        if not operation.is_code_given and "code" not in columns:
            usage(f"give --code CODE or --clear, or a code column in {path}")
    rows = []
    for record in reader:
        raw = {k: (v if isinstance(v, str) else "") for k, v in record.items() if k is not None}
        if not any(value.strip() for value in raw.values()):
            continue  # a blank line
        values = {name: (raw.get(column) or "") for name, column in columns.items()}
        row = Row(reader.line_num, raw, values)  # the line a spreadsheet shows; 1 is the header
        check_row(row, operation)
        rows.append(row)
    digest = hashlib.sha256(data + b"\0" + operation.fingerprint().encode()).hexdigest()
    return header, rows, digest


def check_row(row: Row, operation: Operation) -> None:
    person, email = row.values.get("personId", "").strip(), row.values.get("email", "").strip()
    if person:
        if not re.fullmatch(r"[0-9]+", person) or int(person) <= 0:
            hint = ' It looks like an email: put it in an "email" column.' if "@" in person else ""
            row.problem = f"personId must be an integer, got {person!r}.{hint}"
            return
        row.target = Target(int(person), None)
    elif email:
        row.target = Target(None, email)
    else:
        row.problem = "personId and email are both empty."
        return
    if operation.name == "add-member" and operation.community_id is None:
        community = row.values.get("communityId", "").strip()
        if not re.fullmatch(r"[0-9]+", community) or int(community) <= 0:
            row.problem = f"communityId must be a whole number, got {community!r}."
            return
        row.values["communityId"] = community
    if operation.name == "set-code" and not operation.is_code_given and not row.values["code"]:
        row.problem = (
            "code is empty. An empty code never clears; to clear codes, use a file "
            "without a code column and --clear."
        )


def row_key(digest: str, operation: Operation, row: Row) -> str:
    return f"pm-ops-csv-{operation.name}-{digest[:32]}-line{row.line}"


@dataclass
class Failure:
    row: Row
    status: str
    code: str
    detail: str
    replayed: bool = False


def run_file(client: OpsClient, operation: Operation, path: Path, options: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    global _err_console
    as_json = options["as_json"]
    header, rows, digest = read_rows(path, operation)
    failed_path = options["failed_path"] or path.with_name(f"{path.stem}.failed.csv")
    if failed_path.resolve() == path.resolve():
        usage("--failed must not be the input file")
    interval = 60.0 / options["rate"]
    outcomes: Counter[str] = Counter()
    failures: list[Failure] = []
    stopped: OpsError | None = None
    console = Console(stderr=True, highlight=False)
    progress = Progress(
        TextColumn(f"{operation.name} [bold]{path.name}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    current: Row | None = None
    try:
        with progress:
            _err_console = progress.console
            task = progress.add_task("calls", total=len(rows), failed=0)
            pacer = Pacer(interval)
            for row in rows:
                current = row
                if row.problem is not None:
                    failures.append(Failure(row, "", "invalid_row", row.problem))
                    emit_row(as_json, row, None, failures[-1])
                else:
                    pacer.wait()
                    try:
                        assert row.target is not None
                        result = operation.invoke(
                            client, row.target, row_key(digest, operation, row), row.values
                        )
                    except OpsError as error:
                        if error.exit_code != EXIT_FIX_INPUT:
                            stopped = error
                            break
                        failures.append(
                            Failure(
                                row,
                                str(error.status or ""),
                                error.code,
                                error.detail,
                                error.replayed,
                            )
                        )
                        emit_row(as_json, row, None, failures[-1])
                    else:
                        outcomes[result.as_dict()["outcome"]] += 1
                        outcomes["replayed"] += result.replayed
                        emit_row(as_json, row, result, None)
                progress.update(task, advance=1, failed=len(failures))
            current = None
    except KeyboardInterrupt:
        _err_console = None
        where = f" at line {current.line}" if current else ""
        write_failures(failed_path, header, failures)
        click.echo(
            f"\nInterrupted{where}. Re-run the same command to resume: rows already done are "
            "replayed by the server, not run again.",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    finally:
        _err_console = None
    summarise(
        operation.command_line(failed_path),
        failed_path,
        header,
        rows,
        outcomes,
        failures,
        stopped,
        as_json,
    )


class Pacer:
    """Keeps the starts of successive calls at least `interval` seconds apart."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
        self._next = max(now, self._next) + self._interval


def emit_row(
    as_json: bool,
    row: Row,
    result: MembershipResult | SignupCodeResult | None,
    failure: Failure | None,
) -> None:
    if as_json:
        if result is not None:
            record = {"line": row.line, **result.as_dict()}
        else:
            assert failure is not None
            record = {
                "line": row.line,
                "ok": False,
                "status": int(failure.status) if failure.status else None,
                "code": failure.code,
                "detail": failure.detail,
            }
        click.echo(json.dumps(record))
    elif failure is not None:
        status = f"{failure.status} " if failure.status else ""
        echo_err(f"line {row.line}: {status}{failure.code}: {failure.detail}")


def write_failures(path: Path, header: list[str], failures: list[Failure]) -> None:
    if not failures:
        return
    columns = [h for h in header if h not in ERROR_COLUMNS] + list(ERROR_COLUMNS)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        for failure in failures:
            writer.writerow(
                {
                    **failure.row.raw,
                    "error_status": failure.status,
                    "error_code": failure.code,
                    "error_detail": failure.detail,
                }
            )


def summarise(
    rerun_command: str,
    failed_path: Path,
    header: list[str],
    rows: list[Row],
    outcomes: Counter[str],
    failures: list[Failure],
    stopped: OpsError | None,
    as_json: bool,
) -> None:
    write_failures(failed_path, header, failures)
    done = sum(n for name, n in outcomes.items() if name != "replayed")
    words = {
        "added": "added",
        "already_member": "already members",
        "changed": "changed",
        "cleared": "cleared",
        "unchanged": "unchanged",
    }
    if outcomes["already_member"] == 1:
        words["already_member"] = "already a member"
    parts = [f"{outcomes[name]} {word}" for name, word in words.items() if outcomes[name]]
    summary = ", ".join(parts)
    if outcomes["replayed"]:
        summary += (
            f"; {outcomes['replayed']} of them done by an earlier run with this file, "
            "replayed by the server, not repeated"
        )
    lines = [f"{done} of {len(rows)} rows succeeded" + (f" ({summary})." if parts else ".")]
    if failures:
        lines.append(
            f"{len(failures)} failed: written to {failed_path}, with the reason in its "
            f"error_detail column. Fix those rows, then run: {rerun_command}"
        )
        replayed_failures = sum(f.replayed for f in failures)
        if replayed_failures:
            lines.append(
                f"{replayed_failures} of the failures are answers stored by an earlier run of "
                "this same file and replayed; to try those rows again (say, after the person "
                "was imported), run the failed-rows file: its rows get new keys."
            )
    elif failed_path.exists() and not stopped:
        lines.append(f"No failures; {failed_path} is from an earlier run and out of date.")
    if stopped is not None:
        status = f"{stopped.status} " if stopped.status is not None else ""
        lines.append(f"Stopped: {status}{stopped.code}: {stopped.detail}")
        lines.append(stopped.who_fixes)
        lines.append(
            "Then re-run the same command: rows already done are replayed by the server, "
            "not run again."
        )
    for line in lines:
        click.echo(line, err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "summary": True,
                    "rows": len(rows),
                    "succeeded": done,
                    "failed": len(failures),
                    "failedFile": str(failed_path) if failures else None,
                    "stopped": stopped.as_dict() if stopped else None,
                    **{name: outcomes[name] for name in [*words, "replayed"]},
                }
            )
        )
    if stopped is not None:
        sys.exit(stopped.exit_code)
    sys.exit(EXIT_FIX_INPUT if failures else EXIT_OK)
