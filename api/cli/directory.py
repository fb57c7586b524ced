import csv
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.progress import Progress

from aggregates.values import InvalidValue, email_address, label
from api.bootstrap import bootstrap
from api.config import Config
from commands.application import OpsApplication
from commands.directory import CommunityRow, PersonRow

MAX_REPORTED = 20


class BadFile(click.ClickException):
    def __init__(self, path: Path, problems: list[str], total: int) -> None:
        more = f"\n  … and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(
            f"{path}: {total} bad row(s); nothing was imported.\n  " + "\n  ".join(problems) + more
        )


def register(cli: click.Group) -> None:
    cli.add_command(directory)


@click.group()
def directory() -> None:
    """Load the people and communities the operations refer to."""


@directory.command(name="import")
@click.option(
    "--people",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with header id,email",
)
@click.option(
    "--communities",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with header id,name",
)
@click.pass_obj
def import_(config: Config, people: Path | None, communities: Path | None) -> None:
    """Import people and communities. Re-running is a no-op; a changed email is
    recorded as EmailChanged; a file with any bad row is refused whole."""
    if not people and not communities:
        raise click.UsageError("Give --people FILE and/or --communities FILE.")
    # Validate every file completely before applying anything.
    counts = {
        path: _validate(path, reader)
        for path, reader in ((communities, read_communities), (people, read_people))
        if path
    }
    with bootstrap(config) as services:
        _apply(services.app, people, communities, counts)


def _apply(
    app: OpsApplication, people: Path | None, communities: Path | None, counts: dict[Path, int]
) -> None:
    steps = (
        ("communities", communities, read_communities, app.import_communities, "renamed"),
        ("people", people, read_people, app.import_people, "email changed"),
    )
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        for label, path, reader, apply, changed in steps:
            if path is None:
                continue
            task = progress.add_task(label, total=counts[path])
            report = apply(reader(path), on_batch=lambda n, task=task: progress.advance(task, n))
            click.echo(
                f"{label}: {report.created} created, {report.changed} {changed}, "
                f"{report.unchanged} unchanged"
            )


def _validate(path: Path, reader: Callable[..., Iterator[object]]) -> int:
    """Read the whole file; raise with every bad line, or return the row count."""
    problems: list[str] = []
    rows = sum(1 for _ in reader(path, problems=problems))
    if problems:
        raise BadFile(path, problems[:MAX_REPORTED], len(problems))
    return rows


def read_people(path: Path, problems: list[str] | None = None) -> Iterator[PersonRow]:
    seen: set[int] = set()
    for line, (raw_id, raw_email) in _rows(path, ("id", "email"), problems):
        person_id = _positive_int(raw_id)
        error = None
        try:
            email = email_address(raw_email)
        except InvalidValue as reason:
            error = f"email {raw_email[:64]!r} {reason}"
        if person_id is None:
            error = f"id {raw_id[:64]!r} is not a positive whole number"
        elif person_id in seen:
            error = f"id {person_id} appears more than once"
        if error:
            _problem(problems, line, error)
            continue
        assert person_id is not None
        seen.add(person_id)
        yield PersonRow(line, person_id, email)


def read_communities(path: Path, problems: list[str] | None = None) -> Iterator[CommunityRow]:
    seen: set[int] = set()
    for line, (raw_id, raw_name) in _rows(path, ("id", "name"), problems):
        community_id = _positive_int(raw_id)
        error = None
        try:
            name = label(raw_name)
        except InvalidValue as reason:
            error = f"name {reason}"
        if community_id is None:
            error = f"id {raw_id[:64]!r} is not a positive whole number"
        elif community_id in seen:
            error = f"id {community_id} appears more than once"
        if error:
            _problem(problems, line, error)
            continue
        assert community_id is not None
        seen.add(community_id)
        yield CommunityRow(line, community_id, name)


def _rows(
    path: Path, header: tuple[str, ...], problems: list[str] | None
) -> Iterator[tuple[int, list[str]]]:
    """Each row's line number and values (as many as the header has): a list, not a
    dict by column name, since the import reads every row twice (validation, then apply)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            first = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as error:
            _problem(problems, 1, f"cannot be read ({error})")
            return
        if first is None or tuple(c.strip().lower() for c in first) != header:
            _problem(problems, 1, f"the header must be {','.join(header)}")
            return
        try:
            for values in reader:
                if not values or values == [""]:
                    continue
                if len(values) != len(header):
                    _problem(
                        problems,
                        reader.line_num,
                        f"expected {len(header)} columns, found {len(values)}",
                    )
                    continue
                yield reader.line_num, values
        except (csv.Error, UnicodeDecodeError) as error:
            _problem(problems, reader.line_num, f"cannot be read ({error})")


def _problem(problems: list[str] | None, line: int, message: str) -> None:
    if problems is None:  # the import pass only runs on a validated file
        raise click.ClickException(f"line {line}: {message}")
    problems.append(f"line {line}: {message}")


def _positive_int(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if 0 < value < 2**63 else None
