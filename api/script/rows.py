"""A `--from` CSV file: read, checked row by row, and the idempotency key of each row.

A row's key is derived from the file's bytes, the operation with its options, and the row's
line, so running the same command on the same file again replays every row the server
already answered, and a changed file (say, the failed rows, fixed) runs afresh.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from api.script.operation import Operation, Target
from commands.operations import OPERATIONS

COLUMNS = ("personId", "email", *(op.field.name for op in OPERATIONS))
# A header may say personId, personid or person_id.
COLUMN_ALIASES = {
    alias: name
    for name in COLUMNS
    for alias in (name.lower(), re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())
}


class FileProblem(ValueError):
    """The file as a whole cannot be run (encoding, header); the message says what to fix."""


@dataclass
class Row:
    line: int  # the line a spreadsheet shows; 1 is the header
    raw: dict[str, str]  # as in the file, for the failures CSV
    values: dict[str, str]  # by canonical column name
    target: Target | None = None
    problem: str | None = None  # why the row is not sent, in words for the person who fixes it


@dataclass(frozen=True)
class RowFile:
    header: list[str]
    rows: list[Row]
    digest: str  # sha256 of the file's bytes and the operation's fingerprint

    def key(self, operation: Operation, row: Row) -> str:
        return f"pm-ops-csv-{operation.name}-{self.digest[:32]}-line{row.line}"


def read_rows(path: Path, operation: Operation) -> RowFile:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileProblem(f"{path} is not UTF-8 text; save it as CSV UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h for h in (reader.fieldnames or []) if h is not None]
    columns = {
        COLUMN_ALIASES[h.strip().lower()]: h for h in header if h.strip().lower() in COLUMN_ALIASES
    }
    check_columns(path, header, columns, operation)
    rows = []
    for record in reader:
        raw = {k: (v if isinstance(v, str) else "") for k, v in record.items() if k is not None}
        if not any(value.strip() for value in raw.values()):
            continue  # a blank line
        values = {name: (raw.get(column) or "") for name, column in columns.items()}
        row = Row(reader.line_num, raw, values)
        check_row(row, operation)
        rows.append(row)
    digest = hashlib.sha256(data + b"\0" + operation.fingerprint().encode()).hexdigest()
    return RowFile(header, rows, digest)


def check_columns(
    path: Path, header: list[str], columns: dict[str, str], operation: Operation
) -> None:
    if "personId" not in columns and "email" not in columns:
        raise FileProblem(
            f"{path} needs a personId or email column (header row), found: {', '.join(header) or 'nothing'}"
        )
    field = operation.field
    given = f"--{field.option} {field.metavar}" + (" or --clear" if field.nullable else "")
    if not operation.fixed_value_given and field.name not in columns:
        raise FileProblem(f"give {given}, or a {field.name} column in {path}")
    if field.nullable and operation.fixed_value_given and field.name in columns:
        # Which would win, --clear or the column? Neither: say so.
        raise FileProblem(
            f"{path} has a {field.name} column: drop --{field.option}/--clear, or remove the column"
        )


def check_row(row: Row, operation: Operation) -> None:
    """Sets the row's target, or its problem: a row that cannot be right is never sent."""
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
    field = operation.field
    if operation.fixed_value_given:
        return
    value = row.values.get(field.name, "").strip()
    if field.is_integer:
        if not re.fullmatch(r"[0-9]+", value) or int(value) <= 0:
            row.problem = f"{field.name} must be a whole number, got {value!r}."
            return
        row.values[field.name] = value
    elif not row.values[field.name]:
        row.problem = (
            f"{field.name} is empty. An empty {field.name} never clears; to clear, use a file "
            f"without a {field.name} column and --clear."
        )
