"""The auditors' commands on both stores: audit, history, state --as-of, verify."""

import csv
import io
import time
import uuid
from datetime import UTC, datetime

import orjson
import psycopg
import pytest

from tests.conftest import POSTGRES_URL
from tests.test_projections import add_member, invoke, set_code


@pytest.fixture
def story(config, services, client, directory):
    """Two tokens (Customer.io, Marketing Ops), changes, a no-op, a replay, a failure."""
    tag = uuid.uuid4().hex[:6]
    ops_name = f"ops-{tag}"
    ops_token = services.app.issue_token(
        name=ops_name,
        actor="Marketing Ops",
        scopes=["community:add", "code:set"],
        allow_cidrs=[],
        rate_limit=None,
        cio_signing_key=None,
    )
    p, other = directory.person_id, directory.other_person_id
    wf = {"X-Ops-Workflow": f"Welcome {tag}"}
    assert add_member(client, directory, p, key=f"{tag}-1", **wf).status_code == 200
    replay = add_member(client, directory, p, key=f"{tag}-1", **wf)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert add_member(client, directory, p, key=f"{tag}-2", **wf).json["data"]["attributes"][
        "alreadyMember"
    ]
    assert (
        set_code(client, directory, p, "VC-A", key=f"{tag}-3", token=ops_token).status_code == 200
    )
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    assert (
        set_code(client, directory, p, "VC-B", key=f"{tag}-4", token=ops_token).status_code == 200
    )
    assert add_member(client, directory, other, key=f"{tag}-5").status_code == 200
    result = invoke(config, "projections", "run", "--once")
    assert result.exit_code == 0, result.output
    return {"tag": tag, "ops_name": ops_name, "between": between, "wf": wf["X-Ops-Workflow"]}


def audit_json(config, *args):
    result = invoke(config, "audit", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_audit_one_entry_per_change_with_filters(config, directory, story):
    p = directory.person_id
    mine = audit_json(config, "--person", str(p))
    changes = [(e["operation"], e["previous_value"], e["new_value"]) for e in mine]
    # the replay and the no-op added nothing
    assert changes == [
        ("add-member", None, "member"),
        ("set-code", None, "VC-A"),
        ("set-code", "VC-A", "VC-B"),
    ]
    first = mine[0]
    assert first["actor"] == "Customer.io" and first["workflow"] == story["wf"]
    assert (
        first["idempotency_key"] == f"{story['tag']}-1"
        and first["community_id"] == directory.community_id
    )
    assert first["request_id"] and first["source_address"] and first["email"] == directory.email

    assert [e["person_id"] for e in audit_json(config, "--email", directory.email.upper())] == [
        p
    ] * 3
    by_actor = audit_json(config, "--actor", "Marketing Ops")
    assert [e["new_value"] for e in by_actor] == ["VC-A", "VC-B"]
    assert audit_json(config, "--token", story["ops_name"], "--operation", "set-code") == by_actor
    issued = audit_json(config, "--token", story["ops_name"], "--operation", "issue-token")
    assert len(issued) == 1 and "Marketing Ops" in issued[0]["new_value"]
    assert len(audit_json(config, "--workflow", story["wf"])) == 1
    community = audit_json(config, "--community", str(directory.community_id))
    assert {e["person_id"] for e in community} == {p, directory.other_person_id}
    since = story["between"].isoformat()
    assert [e["new_value"] for e in audit_json(config, "--person", str(p), "--since", since)] == [
        "VC-B"
    ]
    assert [e["new_value"] for e in audit_json(config, "--person", str(p), "--until", since)] == [
        "member",
        "VC-A",
    ]


def test_audit_formats(config, directory, story):
    result = invoke(config, "audit", "--person", str(directory.person_id), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["new_value"] for r in rows] == ["member", "VC-A", "VC-B"]
    assert {"at", "actor", "token", "idempotency_key", "request_id", "source_address"} <= set(
        rows[0]
    )
    table = invoke(config, "audit", "--person", str(directory.person_id), "--format", "table")
    assert (
        table.exit_code == 0
        and "VC-B" in table.stdout
        and "Audit trail (3 entries)" in table.stdout
    )
    assert invoke(config, "audit", "--since", "yesterday").exit_code != 0


def test_history_comes_straight_from_the_log(config, directory, story):
    result = invoke(config, "history", "--person", str(directory.person_id), "--format", "json")
    assert result.exit_code == 0, result.output
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == [
        "Registered",
        "MemberAdded",
        "SignupCodeChanged",
        "SignupCodeChanged",
    ]
    assert "new_code='VC-B'" in events[-1]["values"] and events[-1]["actor"] == "Marketing Ops"
    missing = invoke(config, "history", "--person", "1")
    assert missing.exit_code != 0 and "No person" in missing.output


def test_state_now_and_as_of_an_instant(config, directory, story):
    p = str(directory.person_id)

    def state(*args):
        result = invoke(config, "state", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return [orjson.loads(line) for line in result.stdout.splitlines()]

    assert state("--person", p)[0]["signup_code"] == "VC-B"
    assert state("--person", p, "--as-of", story["between"].isoformat())[0]["signup_code"] == "VC-A"
    members = state("--community", str(directory.community_id))
    assert {m["person_id"] for m in members} == {directory.person_id, directory.other_person_id}
    early = state(
        "--community", str(directory.community_id), "--as-of", story["between"].isoformat()
    )
    assert [m["person_id"] for m in early] == [directory.person_id]
    assert state("--as-of", "2000-01-01") == []


def tamper(config, services, statement_sqlite: str, statement_pg: str, params: tuple) -> None:
    if config.is_postgres:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(statement_pg.format(t=f'"{config.schema}".pmops_events'), params)
    else:
        import sqlite3

        path = config.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute(statement_sqlite.format(t="stored_events"), params)


def read_state(config, position: int) -> bytes:
    if config.is_postgres:
        with psycopg.connect(POSTGRES_URL) as conn:
            row = conn.execute(
                f'SELECT state FROM "{config.schema}".pmops_events WHERE notification_id=%s',
                (position,),
            ).fetchone()
    else:
        import sqlite3

        with sqlite3.connect(config.database_url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(
                "SELECT state FROM stored_events WHERE rowid=?", (position,)
            ).fetchone()
    return bytes(row[0])


def test_verify_passes_clean_and_reports_tampering_with_positions(
    config, services, directory, story
):
    clean = invoke(config, "verify")
    assert clean.exit_code == 0, clean.output
    assert "verify: OK" in clean.stdout

    entries = audit_json(config, "--person", str(directory.person_id))
    edited = entries[1]["position"]  # set-code VC-A
    deleted = entries[0]["position"]  # add-member
    state = read_state(config, edited).replace(b'"VC-A"', b'"VC-Z"')
    tamper(
        config,
        services,
        "UPDATE {t} SET state=? WHERE rowid=?",
        "UPDATE {t} SET state=%s WHERE notification_id=%s",
        (state, edited),
    )
    tamper(
        config,
        services,
        "DELETE FROM {t} WHERE rowid=?",
        "DELETE FROM {t} WHERE notification_id=%s",
        (deleted,),
    )
    result = invoke(config, "verify")
    assert result.exit_code == 1
    assert f"position {edited}: event was changed after it was recorded" in result.output
    assert f"position {deleted}: event is missing from the log (deleted)" in result.output
    assert "[audit]" in result.output and "[state]" in result.output
    assert "verify: FAILED" in result.output


def test_audit_finds_people_by_any_email_they_had_and_by_whole_days(config, services):
    from commands.application import PersonRow

    person = uuid.uuid4().int % 10**9 + 10**9
    tag = uuid.uuid4().hex[:6]
    old, new = f"Ödön.{tag}@Example.com", f"new.{tag}@example.com"
    services.app.import_people([PersonRow(2, person, old)])
    services.app.import_people([PersonRow(2, person, new)])
    assert invoke(config, "projections", "run", "--once").exit_code == 0

    for address in (old, old.lower(), f"  {old.upper()} ", new.upper()):
        entries = audit_json(config, "--email", address)
        assert [(e["person_id"], e["operation"]) for e in entries] == [(person, "change-email")], (
            address
        )
    assert audit_json(config, "--email", f"nobody.{tag}@example.com") == []

    actor = audit_json(config, "--person", str(person), "--actor", "DIRECTORY IMPORT")
    assert len(actor) == 1
    today = datetime.now(UTC).date().isoformat()
    assert len(audit_json(config, "--person", str(person), "--until", today)) == 1
    assert len(audit_json(config, "--person", str(person), "--since", today)) == 1


def test_verify_reports_an_event_edited_into_a_shape_it_cannot_have(
    config, services, directory, story
):
    entries = audit_json(config, "--person", str(directory.person_id))
    edited = entries[2]["position"]  # set-code VC-A -> VC-B
    state = read_state(config, edited)
    assert b'"previous_code":"VC-A",' in state
    tamper(
        config,
        services,
        "UPDATE {t} SET state=? WHERE rowid=?",
        "UPDATE {t} SET state=%s WHERE notification_id=%s",
        (state.replace(b'"previous_code":"VC-A",', b""), edited),
    )
    result = invoke(config, "verify")
    assert result.exit_code == 1
    assert f"position {edited}: event was changed after it was recorded" in result.output
    assert f"position {edited}: event cannot be read" in result.output
    assert "verify: FAILED" in result.output


def test_rebuilding_the_chain_will_not_erase_evidence_of_tampering(
    config, services, directory, story
):
    entries = audit_json(config, "--person", str(directory.person_id))
    edited = entries[1]["position"]
    tamper(
        config,
        services,
        "UPDATE {t} SET state=? WHERE rowid=?",
        "UPDATE {t} SET state=%s WHERE notification_id=%s",
        (read_state(config, edited).replace(b'"VC-A"', b'"VC-Z"'), edited),
    )
    refused = invoke(config, "projections", "rebuild", "chain")
    assert refused.exit_code != 0
    assert f"position {edited}: event was changed" in refused.output
    assert "--accept-current-log" in refused.output
    still = invoke(config, "verify")
    assert still.exit_code == 1
    assert f"position {edited}: event was changed after it was recorded" in still.output

    accepted = invoke(config, "projections", "rebuild", "chain", "--accept-current-log")
    assert accepted.exit_code == 0, accepted.output
    chain_only = [
        line for line in invoke(config, "verify").output.splitlines() if "[chain]" in line
    ]
    assert chain_only == []
