"""What the person running `pm-ops call` reads, and the failed-rows file they fix.

Results and `--json` records go to stdout; words for people (errors, retries, per-row
failures, the summary) go to stderr. While a progress bar is drawn, stderr messages go
through its console so they print above the bar instead of through it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from api.client import OpsError
from api.script import exit_codes
from api.script.batch import BatchRun, Failure
from api.script.operation import Result
from api.script.rows import Row

ERROR_COLUMNS = ("error_status", "error_code", "error_detail")
OUTCOME_WORDS = {
    "added": "added",
    "already_member": "already members",
    "changed": "changed",
    "cleared": "cleared",
    "unchanged": "unchanged",
}


class Screen:
    """stderr for people, routed through the progress bar's console while one is drawn."""

    def __init__(self) -> None:
        self._console: Any = None

    def err(self, message: str) -> None:
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            click.echo(message, err=True)

    @contextmanager
    def progress(
        self, operation: str, file_name: str, total: int, as_json: bool
    ) -> Iterator[RowPrinter]:
        from rich.console import Console  # only a --from run draws a bar
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn(f"{operation} [bold]{file_name}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True, highlight=False),
        )
        try:
            with bar:
                self._console = bar.console
                task = bar.add_task("calls", total=total, failed=0)
                yield RowPrinter(
                    self, as_json, lambda failed: bar.update(task, advance=1, failed=failed)
                )
        finally:
            self._console = None

    def retry(self, error: OpsError, attempt: int, delay: float, max_attempts: int) -> None:
        what = f"{error.status} {error.code}" if error.status else error.code
        self.err(
            f"{what}: {error.detail} Retrying in {delay:.1f} s with the same idempotency key "
            f"(attempt {attempt} of {max_attempts})."
        )


class RowPrinter:
    """The batch's observer: one line per row (JSON on stdout, or a failure on stderr),
    then the progress bar moves on."""

    def __init__(self, screen: Screen, as_json: bool, advance: Callable[[int], object]) -> None:
        self._screen = screen
        self._as_json = as_json
        self._advance = advance
        self._failed = 0

    def row_done(self, row: Row, result: Result | None, failure: Failure | None) -> None:
        if self._as_json:
            click.echo(json.dumps(row_record(row, result, failure)))
        elif failure is not None:
            status = f"{failure.status} " if failure.status else ""
            self._screen.err(f"line {row.line}: {status}{failure.code}: {failure.detail}")
        self._failed += failure is not None
        self._advance(self._failed)


def row_record(row: Row, result: Result | None, failure: Failure | None) -> dict[str, Any]:
    if result is not None:
        return {"line": row.line, **result.as_dict()}
    assert failure is not None
    return {
        "line": row.line,
        "ok": False,
        "status": int(failure.status) if failure.status else None,
        "code": failure.code,
        "detail": failure.detail,
    }


# --- one call ------------------------------------------------------------------------


def print_result(result: Result, as_json: bool) -> None:
    click.echo(json.dumps(result.as_dict()) if as_json else result.describe())


def print_no_token() -> None:
    click.echo("Error: no token. Set OPS_TOKEN to the script token engineering gave you.", err=True)


def print_error(error: OpsError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(error.as_dict()))
        return
    status = f"{error.status} " if error.status is not None else ""
    click.echo(f"Error: {status}{error.code}: {error.detail}", err=True)
    click.echo(error.who_fixes, err=True)
    if exit_codes.for_call(error) not in (exit_codes.EXIT_FIX_INPUT, exit_codes.EXIT_TOKEN):
        click.echo(
            f"To retry later without any risk of running it twice: --key {error.idempotency_key}",
            err=True,
        )


# --- the end of a --from run -----------------------------------------------------------


def write_failures(path: Path, header: list[str], failures: list[Failure]) -> None:
    """The failed rows as they were in the file, with the reason in three more columns."""
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


def interrupted_message(run: BatchRun) -> str:
    where = f" at line {run.interrupted_at}" if run.interrupted_at is not None else ""
    return (
        f"\nInterrupted{where}. Re-run the same command to resume: rows already done are "
        "replayed by the server, not run again."
    )


def summary_lines(
    run: BatchRun, failed_path: Path, rerun_command: str, earlier_failed_file: bool
) -> list[str]:
    """The summary in words; `earlier_failed_file`: a failed-rows file this run did not write."""
    outcomes = run.outcomes
    words = dict(OUTCOME_WORDS)
    if outcomes["already_member"] == 1:
        words["already_member"] = "already a member"
    parts = [f"{outcomes[name]} {word}" for name, word in words.items() if outcomes[name]]
    summary = ", ".join(parts)
    if outcomes["replayed"]:
        summary += (
            f"; {outcomes['replayed']} of them done by an earlier run with this file, "
            "replayed by the server, not repeated"
        )
    lines = [f"{run.succeeded} of {run.rows} rows succeeded" + (f" ({summary})." if parts else ".")]
    if run.failures:
        lines += _failure_lines(run.failures, failed_path, rerun_command)
    elif earlier_failed_file and not run.stopped:
        lines.append(f"No failures; {failed_path} is from an earlier run and out of date.")
    if run.stopped is not None:
        lines += _stopped_lines(run.stopped)
    return lines


def _failure_lines(failures: list[Failure], failed_path: Path, rerun_command: str) -> list[str]:
    lines = [
        f"{len(failures)} failed: written to {failed_path}, with the reason in its "
        f"error_detail column. Fix those rows, then run: {rerun_command}"
    ]
    replayed = sum(f.replayed for f in failures)
    if replayed:
        lines.append(
            f"{replayed} of the failures are answers stored by an earlier run of "
            "this same file and replayed; to try those rows again (say, after the person "
            "was imported), run the failed-rows file: its rows get new keys."
        )
    return lines


def _stopped_lines(stopped: OpsError) -> list[str]:
    status = f"{stopped.status} " if stopped.status is not None else ""
    return [
        f"Stopped: {status}{stopped.code}: {stopped.detail}",
        stopped.who_fixes,
        "Then re-run the same command: rows already done are replayed by the server, "
        "not run again.",
    ]


def summary_record(run: BatchRun, failed_path: Path) -> dict[str, Any]:
    """The last line of a --from run with --json."""
    return {
        "summary": True,
        "rows": run.rows,
        "succeeded": run.succeeded,
        "failed": len(run.failures),
        "failedFile": str(failed_path) if run.failures else None,
        "stopped": run.stopped.as_dict() if run.stopped else None,
        **{name: run.outcomes[name] for name in [*OUTCOME_WORDS, "replayed"]},
    }


def finish(
    run: BatchRun, header: list[str], failed_path: Path, rerun_command: str, as_json: bool
) -> None:
    """Writes the failed rows and prints how the run ended (the exit code is not decided here)."""
    write_failures(failed_path, header, run.failures)
    if run.interrupted:
        click.echo(interrupted_message(run), err=True)
        return
    earlier = not run.failures and failed_path.exists()
    for line in summary_lines(run, failed_path, rerun_command, earlier):
        click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps(summary_record(run, failed_path)))
