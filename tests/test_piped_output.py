"""`history`, `audit` and `state` piped into another program (not a terminal): one
record per line, tab-separated, every value whole, so `grep` finds what it looks for."""

import os
import subprocess
import uuid

from tests.server import pm_ops
from tests.test_projections import invoke, set_code


def piped(config, *args: str) -> list[list[str]]:
    """Run the real command with its stdout on a pipe; rows split on tabs."""
    result = subprocess.run(
        [pm_ops(), *args],
        env={**os.environ, "OPS_DATABASE_URL": config.database_url, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_piped_history_audit_and_state_keep_each_record_on_one_line(
    config, services, client, directory
):
    code = "VC-" + uuid.uuid4().hex + "-" + "x" * 20  # longer than any column a table gives
    workflow = "Welcome series for founders who signed up during the autumn campaign " + code
    response = set_code(
        client, directory, directory.person_id, code, key=code, **{"X-Ops-Workflow": workflow}
    )
    assert response.status_code == 200
    assert invoke(config, "projections", "run", "--once").exit_code == 0
    person = str(directory.person_id)

    header, *events = piped(config, "history", "--person", person)
    assert header[:4] == ["version", "at", "event", "values"]
    assert all(len(row) == len(header) for row in events)
    changed = [row for row in events if "SignupCodeChanged" in row]
    assert len(changed) == 1
    row = dict(zip(header, changed[0], strict=True))
    assert row["values"] == f"previous_code=None, new_code='{code}'"
    assert row["workflow"] == workflow and row["idempotency_key"] == code

    header, *entries = piped(config, "audit", "--person", person)
    assert [dict(zip(header, e, strict=True))["new_value"] for e in entries] == [code]
    assert dict(zip(header, entries[0], strict=True))["email"] == directory.email
    assert dict(zip(header, entries[0], strict=True))["workflow"] == workflow

    header, *people = piped(config, "state", "--person", person)
    assert header == ["person_id", "email", "signup_code", "communities"]
    assert people == [[person, directory.email, code, ""]]

    header, *people = piped(config, "state", "--community", str(directory.community_id))
    assert people == []  # nobody added yet; the header alone says which columns
