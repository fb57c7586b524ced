"""`--from` files read in-process (api/script/rows.py): columns, line numbers, rows that
are never sent and why, files refused whole, and the key each row is sent with."""

import re
from pathlib import Path

import pytest

from api.script.operation import Operation, Target
from api.script.rows import FileProblem, read_rows
from commands.operations import BY_NAME
from tests.helpers import write_csv

ADD_42 = Operation(BY_NAME["add-member"], 42)


def test_columns_by_any_alias_and_the_lines_a_spreadsheet_shows(tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes(
        b"\xef\xbb\xbfPerson_ID,EMAIL,note\r\n"  # Excel's CSV UTF-8: a BOM and CRLF
        b"123,,first\r\n"
        b",\r\n"  # a blank row: skipped, but it still counts as a line
        b",Jane@Example.com,second\r\n"
        b'124,,"two\r\nlines"\r\n'
        b"125,,after\r\n"
    )
    file = read_rows(path, ADD_42)
    assert file.header == ["Person_ID", "EMAIL", "note"]
    assert [row.line for row in file.rows] == [2, 4, 6, 7]
    assert [row.target for row in file.rows] == [
        Target(123, None),
        Target(None, "Jane@Example.com"),
        Target(124, None),
        Target(125, None),
    ]
    assert all(row.problem is None for row in file.rows)
    assert file.rows[2].raw == {"Person_ID": "124", "EMAIL": "", "note": "two\r\nlines"}
    assert file.rows[0].values == {"personId": "123", "email": ""}


def test_person_id_wins_over_email_when_both_are_filled(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["email", "personId"], [["a@example.com", 7]])
    [row] = read_rows(path, ADD_42).rows
    assert row.target == Target(7, None)


@pytest.mark.parametrize(
    ("header", "row", "operation", "problem"),
    [
        (["personId"], ["jane@example.com"], ADD_42, 'put it in an "email" column'),
        (["personId"], ["12.5"], ADD_42, "personId must be an integer, got '12.5'."),
        (["personId"], ["0"], ADD_42, "personId must be an integer, got '0'."),
        (["personId", "email", "x"], ["", " ", "note"], ADD_42, "both empty"),
        (
            ["personId", "communityId"],
            ["1", "forty"],
            Operation(BY_NAME["add-member"], None),
            "'forty'",
        ),
        (
            ["personId", "community_id"],
            ["1", "0"],
            Operation(BY_NAME["add-member"], None),
            "whole number",
        ),
        (
            ["personId", "code"],
            ["1", ""],
            Operation(BY_NAME["set-code"], None, False),
            "never clears",
        ),
    ],
)
def test_a_row_that_cannot_be_right_has_a_problem_and_no_target(
    tmp_path, header, row, operation, problem
):
    path = write_csv(tmp_path / "rows.csv", header, [row])
    [checked] = read_rows(path, operation).rows
    assert checked.problem is not None and problem in checked.problem


def test_a_community_per_row_and_a_code_per_row(tmp_path):
    add = write_csv(tmp_path / "a.csv", ["personId", "CommunityId"], [[1, " 42 "]])
    [row] = read_rows(add, Operation(BY_NAME["add-member"], None)).rows
    assert (row.problem, row.values["communityId"]) == (None, "42")
    codes = write_csv(tmp_path / "c.csv", ["person_id", "Code"], [[1, "VC-Partners"]])
    [row] = read_rows(codes, Operation(BY_NAME["set-code"], None, False)).rows
    assert (row.problem, row.values["code"]) == (None, "VC-Partners")


@pytest.mark.parametrize(
    ("header", "operation", "message"),
    [
        (["id", "mail"], ADD_42, "needs a personId or email column (header row), found: id, mail"),
        ([], ADD_42, "found: nothing"),
        (
            ["personId"],
            Operation(BY_NAME["add-member"], None),
            "give --community ID, or a communityId column",
        ),
        (["personId", "code"], Operation(BY_NAME["set-code"], "VC", False), "has a code column"),
        (["personId", "code"], Operation(BY_NAME["set-code"], None, True), "has a code column"),
        (["personId"], Operation(BY_NAME["set-code"], None, False), "give --code CODE or --clear"),
    ],
)
def test_a_file_that_cannot_be_run_is_refused_whole(tmp_path, header, operation, message):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(header) + ("\n1\n" if header else ""))
    with pytest.raises(FileProblem) as refused:
        read_rows(path, operation)
    assert message in str(refused.value)


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("personId,note\n1,café\n".encode("latin-1"))
    with pytest.raises(FileProblem, match="not UTF-8 text; save it as CSV UTF-8"):
        read_rows(path, ADD_42)


def keys(path: Path, operation: Operation) -> list[str]:
    file = read_rows(path, operation)
    return [file.key(operation, row) for row in file.rows]


def test_a_rows_key_comes_from_the_file_the_operation_and_the_line(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["personId"], [[1], [2]])
    first = keys(path, ADD_42)
    assert all(re.fullmatch(r"pm-ops-csv-add-member-[0-9a-f]{32}-line[0-9]+", k) for k in first)
    assert [k.rsplit("-", 1)[1] for k in first] == ["line2", "line3"]
    assert keys(path, ADD_42) == first  # the same command on the same file: the same keys
    copy = tmp_path / "elsewhere.csv"
    copy.write_bytes(path.read_bytes())
    assert keys(copy, ADD_42) == first  # the content decides, not the file's name

    changed = [
        keys(write_csv(tmp_path / "q.csv", ["personId"], [[1], [3]]), ADD_42),
        keys(path, Operation(BY_NAME["add-member"], 43)),
    ]
    for other in changed:
        assert not set(other) & set(first)
    code, clear = (
        Operation(BY_NAME["set-code"], "VC", False),
        Operation(BY_NAME["set-code"], None, True),
    )
    assert not set(keys(path, code)) & set(keys(path, clear))
