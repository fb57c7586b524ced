"""`pm-ops call`: the script client (SPEC §6) on top of api.client."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NoReturn

import click

from api.client import OpsClient, OpsError
from api.script import exit_codes, report
from api.script.batch import Pacer, run_batch
from api.script.operation import Operation, Target
from api.script.rows import FileProblem, read_rows
from commands.operations import OPERATIONS
from commands.operations import Operation as Declared

DEFAULT_RATE = 540  # calls a minute: a little under the default limit of 600

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
            error.exit_code = exit_codes.EXIT_USAGE
            raise


class _Command(_UsageExit1, click.Command):
    pass


class _Group(_UsageExit1, click.Group):
    command_class = _Command


def register(cli: click.Group) -> None:
    cli.add_command(call)


@click.group(cls=_Group, epilog=EXIT_CODES_HELP)
def call() -> None:
    """Run the operations from a terminal or a script (the script client).

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


def common_options(command: click.Command) -> click.Command:
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
    for option in options:
        option(command)  # click's decorators add their parameter to a Command as well
    return command


def operation_command(declared: Declared) -> click.Command:
    """`pm-ops call NAME`, made from the operation's declaration: its attribute's option
    (and --clear when null means something), the common options, help with examples."""
    field = declared.field

    def callback(**options: Any) -> int:
        value, clear = options.pop("value"), options.pop("clear", False)
        if value is not None and clear:
            usage(f"give either --{field.option} or --clear, not both")
        return run(Operation(declared, value, clear), options)

    params = [
        click.Option(
            [f"--{field.option}", "value"],
            type=int if field.is_integer else str,
            callback=_positive if field.is_integer else None,
            metavar=field.metavar,
            help=f"{field.help} With --from, a {field.name} column may give it per row instead.",
        )
    ]
    if field.nullable:
        params.append(
            click.Option(["--clear"], is_flag=True, help=f"Clear it (back to {field.null_words}).")
        )
    command = _Command(
        declared.name,
        callback=callback,
        params=params,
        help=_help(declared),
        epilog=EXIT_CODES_HELP,
        short_help=declared.summary + ".",
    )
    return common_options(command)


def _help(declared: Declared) -> str:
    field, name = declared.field, declared.name
    value = f"--{field.option} {field.example}"
    examples = [
        f"pm-ops call {name} --person 123 {value}",
        f"pm-ops call {name} --email jane@example.com {value}",
    ]
    if field.nullable:
        examples.append(f"pm-ops call {name} --person 123 --clear")
    examples += [
        f"pm-ops call {name} --from people.csv {value}",
        f"pm-ops call {name} --from rows.csv          (personId,{field.name} columns)",
    ]
    lines = [declared.summary + ".", "", "\b", *(f"  {e}" for e in examples), ""]
    lines += list(declared.notes)
    if field.nullable:
        lines += [
            "",
            f"Clearing must be said with --clear: an empty {field.name} is an error, "
            "never a silent clear.",
        ]
    return "\n".join(lines)


for _declared in OPERATIONS:  # `pm-ops call NAME` for each, as a decorator would add it
    call.add_command(operation_command(_declared))


def usage(message: str) -> NoReturn:
    error = click.UsageError(message)
    error.exit_code = exit_codes.EXIT_USAGE
    raise error


# --- running: each returns the process exit code (api.script.exit_codes decides it) ----


def run(operation: Operation, options: dict[str, Any]) -> int:
    from_file: Path | None = options["from_file"]
    person_id, email = options["person_id"], options["email"]
    if from_file is not None:
        if person_id is not None or email is not None or options["key"]:
            usage("--from takes the people from the file; drop --person/--email/--key")
    elif (person_id is None) == (email is None):
        usage("give exactly one of --person ID or --email E (or --from FILE.csv)")
    elif not operation.fixed_value_given:
        field = operation.field
        clear = f", or --clear to reset it to {field.null_words}" if field.nullable else ""
        usage(f"give --{field.option} {field.metavar}{clear}")
    screen = report.Screen()
    client = make_client(options, screen)
    if client is None:
        return exit_codes.EXIT_NO_TOKEN
    if from_file is not None:
        return run_file(client, operation, from_file, options, screen)
    try:
        result = operation.invoke(client, Target(person_id, email), options["key"])
    except OpsError as error:
        report.print_error(error, options["as_json"])
        return exit_codes.for_call(error)
    report.print_result(result, options["as_json"])
    return exit_codes.for_call(None)


def make_client(options: dict[str, Any], screen: report.Screen) -> OpsClient | None:
    """The client, or None (and why, on stderr) when there is no token."""
    url, token = (options["url"] or "").strip(), (options["token"] or "").strip()
    if not url:
        usage(
            "set OPS_URL (or --url) to the base URL of pm-ops, e.g. https://app.letsplaymoney.com"
        )
    if not re.match(r"^https?://[^/\s]+", url):
        usage(f"the URL must look like https://host[:port], not {url!r}")
    if not token:
        report.print_no_token()
        return None
    max_attempts = options["retries"] + 1

    def on_retry(error: OpsError, attempt: int, delay: float) -> None:
        screen.retry(error, attempt, delay, max_attempts)

    return OpsClient(
        url,
        token,
        retries=options["retries"],
        timeout=options["timeout"],
        workflow=options["workflow"],
        on_retry=on_retry,
    )


def run_file(
    client: OpsClient,
    operation: Operation,
    path: Path,
    options: dict[str, Any],
    screen: report.Screen,
) -> int:
    try:
        file = read_rows(path, operation)
    except FileProblem as problem:
        usage(str(problem))
    failed_path: Path = options["failed_path"] or path.with_name(f"{path.stem}.failed.csv")
    if failed_path.resolve() == path.resolve():
        usage("--failed must not be the input file")
    as_json = options["as_json"]
    with screen.progress(operation.name, path.name, len(file.rows), as_json) as printer:
        batch = run_batch(client, operation, file, Pacer.per_minute(options["rate"]), printer)
    rerun = operation.command_line(failed_path)
    report.finish(batch, file.header, failed_path, rerun, as_json)
    return exit_codes.for_batch(batch)
