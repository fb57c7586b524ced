"""Projection machinery on both stores: live runners, rebuild, the runner lock."""

import time
import uuid
from dataclasses import replace
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from api.cli import auditing, cli
from api.cli import projections as projections_cli
from commands.application import CommunityRow, PersonRow
from projections import start_projections
from projections.read_models import DB_PROJECTIONS
from projections.runner import wait_until
from projections.store import open_views
from tests.conftest import add_member_body, new_id, set_code_body
from tests.test_event_decoding import library_mapper

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"


def invoke(config: Any, *args: str) -> Any:
    projections_cli.register(cli)
    auditing.register(cli)
    return CliRunner().invoke(cli, ["--database-url", config.database_url, *args])


def add_member(client, directory, person, community=None, key=None, token=None, **headers):
    body = orjson.dumps(add_member_body(person, community or directory.community_id))
    return client.simulate_post(ADD, body=body, headers=directory.headers(key, token, **headers))


def set_code(client, directory, person, code, key=None, token=None, **headers):
    body = orjson.dumps(set_code_body(person, code=code))
    return client.simulate_post(CODE, body=body, headers=directory.headers(key, token, **headers))


def some_calls(client, directory, tag: str = "") -> list[str]:
    """A mix of changes, no-ops and failures; returns the keys used."""
    tag = tag or uuid.uuid4().hex[:6]
    keys = [f"{tag}-{i}" for i in range(6)]
    assert add_member(client, directory, directory.person_id, key=keys[0]).status_code == 200
    assert add_member(client, directory, directory.person_id, key=keys[1]).status_code == 200
    assert add_member(client, directory, directory.other_person_id, key=keys[2]).status_code == 200
    assert (
        set_code(client, directory, directory.person_id, f"VC-{tag}", key=keys[3]).status_code
        == 200
    )
    assert add_member(client, directory, new_id(), key=keys[4]).status_code == 404
    assert set_code(client, directory, directory.person_id, None, key=keys[5]).status_code == 200
    return keys


def caught_up(app: Any, config: Any, *names: str) -> bool:
    views = open_views(app, config)
    head = app.recorder.max_notification_id() or 0
    return all(views.position(name) >= head for name in names)


def snapshot(app: Any, config: Any) -> dict[str, list[tuple[Any, ...]]]:
    views = open_views(app, config)
    tables = {
        "ops_state_people": "subject, person_id, email, signup_code, updated_at, position",
        "ops_state_memberships": "person_id, community_id, added_at, position",
        "ops_state_communities": "subject, community_id, name",
        "ops_audit": "*",
        "ops_chain": "*",
    }
    result = {}
    with views.read() as cursor:
        for table, columns in tables.items():
            cursor.execute(f"SELECT {columns} FROM {views.table(table)}")
            result[table] = sorted(tuple(row) for row in cursor.fetchall())
    return result


def test_rebuild_equals_live_while_runners_and_api_keep_going(config, services, client, directory):
    running = start_projections(
        config, ("state", "audit", "chain"), poll_seconds=0.1, standby_seconds=0.2
    )
    try:
        some_calls(client, directory)
        assert wait_until(lambda: caught_up(services.app, config, "state", "audit", "chain"), 20)
        live = snapshot(services.app, config)
        assert live["ops_audit"] and live["ops_state_memberships"]

        for name in ("state", "audit", "chain"):
            result = invoke(config, "projections", "rebuild", name)
            assert result.exit_code == 0, result.output
            assert f"{name} rebuilt up to position" in result.output
        assert snapshot(services.app, config) == live

        # The live runners took over again after the rebuild.
        some_calls(client, directory)
        assert wait_until(lambda: caught_up(services.app, config, "state", "audit", "chain"), 20)
        assert invoke(config, "verify").exit_code == 0
    finally:
        running.stop()


EVERY_TABLE = (
    "ops_state_people",
    "ops_state_memberships",
    "ops_state_communities",
    "ops_audit",
    "ops_audit_subjects",
    "ops_audit_emails",
    "ops_chain",
    "ops_activity",
    "ops_tree_leaves",
    "ops_tree_nodes",
)


def every_row(app: Any, config: Any) -> dict[str, list[tuple[Any, ...]]]:
    views = open_views(app, config)
    with views.read() as cursor:
        result = {}
        for table in EVERY_TABLE:
            cursor.execute(f"SELECT * FROM {views.table(table)}")
            result[table] = sorted(tuple(row.values()) for row in map(dict, cursor.fetchall()))
    return result


def test_a_rebuild_makes_every_table_as_following_the_log_one_call_at_a_time_did(
    config, services, client, directory, checkpoint_key
):
    """The live runners apply each call's events as they come (a batch or two per
    call, 500 positions at most); a rebuild folds 5,000 positions into a transaction. Over a log with
    everything a read model folds (a person registered, renamed and re-coded, the
    same membership twice, codes set, cleared and set again, tokens issued, rotated
    and revoked, refused calls, communities created and renamed) both give the same
    rows, in every table of every projection."""
    app, person, other = services.app, directory.person_id, directory.other_person_id
    signing = replace(config, checkpoint_key=checkpoint_key)  # the tree runs only with a key
    running = start_projections(signing, tuple(DB_PROJECTIONS), poll_seconds=0.02)
    many = [PersonRow(line, new_id(), f"bulk{line}@example.com") for line in range(2, 2500)]
    steps = [
        lambda: app.import_people(many),  # 7,500 events: batches read ahead, both ways
        lambda: add_member(client, directory, person),
        lambda: add_member(client, directory, person),  # already a member: a no-op delivery
        lambda: set_code(client, directory, person, "VC-1"),
        lambda: app.import_people([PersonRow(2, person, "Jane.New@Example.com")]),
        lambda: set_code(client, directory, person, "VC-2"),
        lambda: set_code(client, directory, person, None),
        lambda: set_code(client, directory, other, "VC-1"),
        lambda: add_member(client, directory, new_id()),  # nobody: refused
        lambda: client.simulate_post(ADD, body=b"{", headers=directory.headers("broken")),
        lambda: app.import_communities([CommunityRow(2, directory.community_id, "Renamed")]),
        lambda: app.import_communities([CommunityRow(3, new_id(), "Second")]),
        lambda: app.rotate_token(app.list_tokens()[0].name),
        lambda: add_member(client, directory, other, token=directory.issue()),
        lambda: app.revoke_token(app.list_tokens()[-1].name),
        lambda: app.import_people([PersonRow(2, new_id(), "late@example.com")]),
        lambda: set_code(client, directory, person, "VC-2"),
    ]
    try:
        for step in steps:
            step()
            assert wait_until(lambda: caught_up(app, config, *DB_PROJECTIONS), 20)
    finally:
        running.stop()
    live = every_row(app, config)
    assert all(live[table] for table in EVERY_TABLE), live

    for name in DB_PROJECTIONS:
        result = invoke(config, "projections", "rebuild", name)
        assert result.exit_code == 0, result.output
    assert every_row(app, config) == live
    assert invoke(config, "verify").exit_code == 0

    # Rebuilds and verify parse events with orjson: the same events as the library's.
    library = library_mapper(app)
    for note in app.recorder.select_notifications(1, 10**6):
        fast, slow = app.mapper.to_domain_event(note), library.to_domain_event(note)
        assert type(fast) is type(slow) and fast.__dict__ == slow.__dict__


def test_rebuild_refuses_the_feed_and_unknown_names(config, services):
    assert invoke(config, "projections", "rebuild", "slack").exit_code != 0
    assert invoke(config, "projections", "rebuild", "nope").exit_code != 0


def test_two_runners_never_both_process_and_a_standby_takes_over(
    config, services, client, directory
):
    first = start_projections(config, ("state",), poll_seconds=0.1, standby_seconds=0.2)
    second = None
    try:
        assert wait_until(lambda: first.runner("state").active.is_set(), 10)
        second = start_projections(config, ("state",), poll_seconds=0.1, standby_seconds=0.2)
        a, b = first.runner("state"), second.runner("state")
        some_calls(client, directory)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert not (a.active.is_set() and b.active.is_set())
            time.sleep(0.01)
        assert wait_until(lambda: caught_up(services.app, config, "state"), 10)
        assert a.processed > 0 and b.processed == 0

        first.stop()  # the active runner goes away; the standby takes over
        assert wait_until(b.active.is_set, 10)
        some_calls(client, directory)
        assert wait_until(lambda: caught_up(services.app, config, "state"), 10)
        assert b.processed > 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.mark.parametrize("config", ["postgres"], indirect=True)
def test_a_waiting_runner_is_woken_by_each_write_not_by_its_poll(
    config, services, client, directory
):
    """A runner that would poll only once a minute still sees each write within moments
    (its NOTIFY wakes it): after quiet spells, and after a burst it worked through."""
    running = start_projections(config, ("state",), poll_seconds=60)
    try:
        assert wait_until(lambda: caught_up(services.app, config, "state"), 20)
        for _ in range(3):
            time.sleep(0.5)  # waiting now
            some_calls(client, directory)
            assert wait_until(lambda: caught_up(services.app, config, "state"), 5)
        for _ in range(5):  # a burst, then quiet
            some_calls(client, directory)
        assert wait_until(lambda: caught_up(services.app, config, "state"), 5)
        time.sleep(0.5)
        assert add_member(client, directory, directory.person_id).status_code == 200
        assert wait_until(lambda: caught_up(services.app, config, "state"), 5)
    finally:
        running.stop()


def test_status_shows_position_head_and_lag(config, services, client, directory):
    some_calls(client, directory)
    result = invoke(config, "projections", "status", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["projection"]: r for r in map(orjson.loads, result.stdout.splitlines())}
    assert set(rows) == {
        *("state", "audit", "chain", "activity", "checkpoints", "slack", "customerio"),
        *("witness-directory", "witness-s3", "witness-slack", "witness-tsa"),
    }
    assert "set OPS_CHECKPOINT_KEY" in rows["checkpoints"]["runner"]  # off, and says so
    head = services.app.recorder.max_notification_id()
    assert (
        rows["state"]["head"] == head and rows["state"]["lag"] == head - rows["state"]["position"]
    )

    assert invoke(config, "projections", "run", "--once", "--only", "state").exit_code == 0
    result = invoke(config, "projections", "status", "--format", "json")
    rows = {r["projection"]: r for r in map(orjson.loads, result.stdout.splitlines())}
    assert rows["state"]["lag"] == 0 and rows["audit"]["lag"] > 0
    table = invoke(config, "projections", "status")
    assert "state" in table.stdout and "lag" in table.stdout
