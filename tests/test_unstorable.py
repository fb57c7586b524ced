"""What reaches the log can be stored by every read model, on both stores; and a
projection that still cannot store an event says which one and why, and `verify`
and `projections status` report it stuck (issue 17: a NUL quoted back in a refusal
stopped the activity read model on PostgreSQL for good)."""

import uuid

import orjson

from aggregates import RejectedCall
from commands.messages import CallContext
from projections import start_projections
from projections.runner import wait_until
from tests.conftest import add_member_body, set_code_body
from tests.test_projections import ADD, CODE, invoke

NASTY = ("\u0000x", "a\u0000", "line\nbreak", "sep\u2028arator", "\u202eright-to-left")


def refused_values(client, directory):
    """Refusals that quote back what the caller sent, each with a hostile character."""
    answers = []
    for value in NASTY:
        for body, path in (
            (add_member_body(directory.person_id, value), ADD),
            (add_member_body(None, directory.community_id, email=value), ADD),
            (set_code_body(directory.person_id, code=value), CODE),
            (set_code_body(directory.person_id, code=f"VC-{value}"), CODE),
        ):
            answer = client.simulate_post(
                path, body=orjson.dumps(body), headers=directory.headers()
            )
            answers.append(answer)
    return answers


def test_a_refusal_quoting_control_characters_is_stored_by_every_read_model(
    config, client, directory
):
    answers = refused_values(client, directory)
    assert {a.status_code for a in answers} == {422}
    details = [a.json["errors"][0]["detail"] for a in answers]
    assert any("\\x00" in d for d in details), "a NUL is quoted as its escape"
    assert not any("\u0000" in d or "\n" in d or "\u2028" in d for d in details)

    result = invoke(config, "projections", "run", "--once")
    assert result.exit_code == 0, result.output
    status = [
        orjson.loads(line)
        for line in invoke(config, "projections", "status", "--format", "json").stdout.splitlines()
    ]
    for row in status:
        if row["runner"] in ("none", "active"):
            assert row["lag"] == 0 and row["stuck"] is None, row
    verified = invoke(config, "verify")
    assert verified.exit_code == 0, verified.output
    assert "activity:" in verified.output, "verify covers the activity read model"


def refuse_in_activity(services, config):
    """A trigger that makes the activity table refuse every new row, as a store might."""
    table = config.store.table("ops_activity")
    with services.read_models.views.write() as cursor:
        if config.is_postgres:
            schema = config.store.schema
            cursor.execute(
                f'CREATE FUNCTION "{schema}".refuse() RETURNS trigger AS $$ BEGIN '
                "RAISE EXCEPTION 'the disk says no'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                f'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse()'
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"
            )


def unrefuse(services, config):
    with services.read_models.views.write() as cursor:
        cursor.execute(
            f"DROP TRIGGER refuse ON {config.store.table('ops_activity')}"
            if config.is_postgres
            else "DROP TRIGGER refuse"
        )


def test_a_projection_that_cannot_store_an_event_names_it_and_is_reported_stuck(
    config, services, client, directory, caplog
):
    assert invoke(config, "projections", "run", "--once").exit_code == 0
    refuse_in_activity(services, config)
    body = orjson.dumps(add_member_body(directory.person_id, directory.community_id))
    assert client.simulate_post(ADD, body=body, headers=directory.headers("k-1")).status_code == 200
    position = services.app.recorder.max_notification_id()

    result = invoke(config, "projections", "run", "--once", "--only", "activity")
    assert result.exit_code != 0
    assert f"cannot store the event at position {position} (Delivery.Recorded)" in result.output
    assert "the disk says no" in result.output
    assert "OPS_DATABASE_URL" not in result.output
    assert "Traceback" not in result.output

    status = invoke(config, "projections", "status", "--format", "json")
    rows = {r["projection"]: r for r in map(orjson.loads, status.stdout.splitlines())}
    assert "the disk says no" in rows["activity"]["stuck"]
    assert rows["state"]["stuck"] is None
    verified = invoke(config, "verify")
    assert verified.exit_code == 1
    assert "[activity]" in verified.output and "stuck" in verified.output

    running = start_projections(config, ("activity",), app=services.app, poll_seconds=0.05)
    try:
        assert wait_until(lambda: "cannot store the event" in caplog.text, 10)
    finally:
        running.stop()
    assert "Traceback" not in caplog.text

    unrefuse(services, config)
    assert invoke(config, "projections", "run", "--once").exit_code == 0
    status = invoke(config, "projections", "status", "--format", "json")
    rows = {r["projection"]: r for r in map(orjson.loads, status.stdout.splitlines())}
    assert rows["activity"]["stuck"] is None and rows["activity"]["lag"] == 0
    assert invoke(config, "verify").exit_code == 0


def test_a_control_character_an_earlier_release_recorded_is_stored_escaped(
    config, services, client, directory
):
    """0.1 quoted values back raw: its logs may hold a refusal whose detail has a NUL."""
    context = CallContext(uuid.uuid4(), "old", "Customer.io", "req-1", "key-1")
    services.app.save(
        RejectedCall(
            operation="add-member",
            status=422,
            code="invalid_field",
            detail='communityId must be sent as a number without quotes: 42, not "\x00x".',
            meta=context.meta(),
        )
    )
    result = invoke(config, "projections", "run", "--once")
    assert result.exit_code == 0, result.output
    with services.read_models.views.read() as cursor:
        cursor.execute(f"SELECT detail FROM {config.store.table('ops_activity')}")
        details = [row["detail"] for row in cursor.fetchall()]
    assert 'not "\\x00x".' in " ".join(details)
    assert invoke(config, "verify").exit_code == 0
