"""The exit code of `pm-ops call`, decided in one place (api/script/exit_codes.py), and
the click commands that return it, run in-process against the app on a loopback port."""

from typing import Any

import click
import pytest
from click.testing import CliRunner

from api.cli.call import call
from api.client import EXIT_FIX_INPUT, EXIT_TOKEN, OpsError
from api.script import exit_codes
from api.script.batch import BatchRun, Failure
from api.script.rows import Row
from tests.helpers import write_csv


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, 1), (404, 1), (409, 1), (413, 1), (415, 1), (422, 1),
        (401, 2), (403, 2),
        (500, 3), (502, 3), (503, 3), (504, 3), (None, 3),
        (429, 4),
    ],
)  # fmt: skip
def test_each_status_has_the_exit_code_of_who_handles_it(status, code):
    assert exit_codes.for_status(status) == code
    error = OpsError(status, "x", "detail", "key")
    assert error.exit_code == exit_codes.for_call(error) == code  # the Python API agrees
    assert error.who_fixes == exit_codes.WHO_FIXES[code]
    assert error.as_dict()["exitCode"] == code


def test_a_batch_ends_with_the_code_of_how_it_ended():
    failed = [Failure(Row(2, {}, {}), "404", "person_not_found", "No person.")]
    stopped = OpsError(429, "rate_limited", "Slow down.", "key")
    assert exit_codes.for_batch(BatchRun(3)) == 0
    assert exit_codes.for_batch(BatchRun(3, failures=failed)) == 1
    assert exit_codes.for_batch(BatchRun(3, failures=failed, stopped=stopped)) == 4
    interrupted = BatchRun(3, failures=failed, stopped=stopped, interrupted=True)
    assert exit_codes.for_batch(interrupted) == 130
    assert exit_codes.for_call(None) == 0
    assert (EXIT_FIX_INPUT, EXIT_TOKEN) == (exit_codes.EXIT_USAGE, exit_codes.EXIT_NO_TOKEN)


def invoke(url: str, token: str, *args: str) -> Any:
    """`pm-ops call ARGS` in this process; the command's return value is the exit code."""
    env = {"OPS_URL": url, "OPS_TOKEN": token}
    return CliRunner().invoke(call, list(args), env=env, standalone_mode=False)


def test_the_commands_return_the_exit_code_instead_of_exiting(server, directory, tmp_path):
    d = directory
    added = invoke(server, d.token, "add-member", "--person", str(d.person_id),
                   "--community", str(d.community_id))  # fmt: skip
    assert (added.exception, added.return_value) == (None, 0)
    assert added.stdout == f"Added person {d.person_id} to community {d.community_id}.\n"

    forbidden = invoke(server, d.issue(scopes=("code:set",)), "add-member",
                       "--person", str(d.person_id), "--community", str(d.community_id))  # fmt: skip
    assert (forbidden.exception, forbidden.return_value) == (None, 2)
    assert "403 forbidden" in forbidden.stderr

    path = write_csv(tmp_path / "codes.csv", ["personId", "code"], [[d.person_id, ""]])
    batch = invoke(server, d.token, "set-code", "--from", str(path))
    assert (batch.exception, batch.return_value) == (None, 1)
    assert "0 of 1 rows succeeded." in batch.stderr

    no_token = invoke(server, "", "set-code", "--person", "1", "--clear")
    assert (no_token.exception, no_token.return_value) == (None, 2)
    assert "Error: no token. Set OPS_TOKEN" in no_token.stderr


def test_bad_options_are_a_usage_error_with_the_fix_your_input_code(tmp_path):
    server = "http://127.0.0.1:9"  # never called: the options are refused first
    both = invoke(server, "pmo_x", "set-code", "--person", "1", "--code", "A", "--clear")
    assert isinstance(both.exception, click.UsageError)
    assert both.exception.exit_code == 1
    assert "either --code or --clear" in str(both.exception)
    path = write_csv(tmp_path / "p.csv", ["name"], [["Jane"]])
    unusable = invoke(server, "pmo_x", "add-member", "--from", str(path), "--community", "1")
    assert isinstance(unusable.exception, click.UsageError)
    assert unusable.exception.exit_code == 1
    assert "needs a personId or email column" in str(unusable.exception)
    unknown = invoke(server, "pmo_x", "add-member", "--persn", "1")
    assert isinstance(unknown.exception, click.UsageError)
    assert unknown.exception.exit_code == 1
