"""Stores written by earlier releases (tests/data/legacy_v0_1 by 0.1.0, legacy_v0_2 by
0.2.0, see their READMEs) still work: the same answers, `verify` passes, new calls append
to them, and a projection whose layout changed since (0.1's audit, version 2) rebuilds
itself from the log when its runner starts, with no step for an operator."""

import logging
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from click.testing import CliRunner
from falcon import testing

from api.app import create_app
from api.bootstrap import bootstrap
from api.cli import cli
from api.config import Config
from projections import start_projections
from projections.runner import wait_until
from tests.conftest import POSTGRES_URL, add_member_body
from tests.test_projections import set_code

DATA = Path(__file__).parent / "data"
STORES = ("legacy_v0_1", "legacy_v0_2")
LEGACY = DATA / "legacy_v0_1"


@pytest.fixture(params=STORES)
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A copy of a store an earlier release wrote; `.release` says which."""
    shutil.copy(DATA / request.param / "ops.db", tmp_path / "ops.db")
    config = Config(database_url=f"sqlite:///{tmp_path}/ops.db")
    object.__setattr__(config, "release", request.param)  # which goldens it answers to
    return config


def pm_ops(config: Config, *args: str) -> Any:
    import importlib

    from api.cli import COMMAND_MODULES

    for name in COMMAND_MODULES:
        importlib.import_module(f"api.cli.{name}").register(cli)
    return CliRunner().invoke(cli, ["--database-url", config.database_url, *args])


def json_lines(config: Config, *args: str) -> list[Any]:
    result = pm_ops(config, *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def golden(name: str, release: str = "legacy_v0_1") -> list[Any]:
    text = (DATA / release / name).read_text()
    return [orjson.loads(line) for line in text.splitlines() if line]


def assert_same_answers(config: Config) -> None:
    release = config.release  # type: ignore[attr-defined]
    as_of = (DATA / release / "as_of.txt").read_text().strip()
    for person in ("110", "111"):
        history = json_lines(config, "history", "--person", person)
        assert history == golden(f"history_{person}.jsonl", release)
    assert json_lines(config, "audit") == golden("audit.jsonl", release)
    assert json_lines(config, "state") == golden("state.jsonl", release)
    assert json_lines(config, "state", "--as-of", as_of) == golden("state_as_of.jsonl", release)


def status(config: Config) -> dict[str, Any]:
    result = pm_ops(config, "projections", "status", "--format", "json")
    assert result.exit_code == 0, result.output
    return {row["projection"]: row for row in map(orjson.loads, result.stdout.splitlines())}


def test_the_previous_release_store_gives_the_same_answers_and_upgrades_itself(legacy, caplog):
    from tests.test_bluegreen import leftovers  # it imports this module

    assert_same_answers(legacy)  # read as the old release left it, before any runner
    verified = pm_ops(legacy, "verify")
    assert verified.exit_code == 0, verified.output

    before = status(legacy)
    if legacy.release != "legacy_v0_1":  # type: ignore[attr-defined]
        assert not any(row.get("rebuild_pending") for row in before.values())
        assert pm_ops(legacy, "projections", "run", "--once").exit_code == 0
        assert_same_answers(legacy)
        return
    assert before["audit"]["rebuild_pending"] and before["audit"]["version"] == 1
    assert not before["state"]["rebuild_pending"] and not before["chain"]["rebuild_pending"]

    caplog.set_level(logging.INFO, logger="pm_ops.projections")
    caught_up = pm_ops(legacy, "projections", "run", "--once", "--only", "audit")
    assert caught_up.exit_code == 0, caught_up.output
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "audit: tables are version 1, this release uses version 2" in logged
    assert "audit: rebuilt up to position" in logged

    after = status(legacy)
    assert after["audit"]["version"] == 2 and not after["audit"]["rebuild_pending"]
    assert after["audit"]["lag"] == 0
    assert "audit (rebuild)" not in after and leftovers(legacy) == []  # built beside, swapped in
    assert_same_answers(legacy)
    assert [e["position"] for e in json_lines(legacy, "audit", "--email", "ADA@example.com")] == [
        e["position"] for e in golden("audit.jsonl") if e["person_id"] == 110
    ]
    verified = pm_ops(legacy, "verify")
    assert verified.exit_code == 0, verified.output
    assert "awaits its rebuild" not in verified.output


def test_every_stored_topic_still_names_a_class(legacy):
    """A class that moves module must register its old topic (register_topic)."""
    from projections.replay import notifications

    with bootstrap(legacy) as services:
        notes = list(notifications(services.app))
        topics = {note.topic for note in notes}
        for note in notes:
            services.app.mapper.to_domain_event(note)  # raises if a topic no longer resolves
    assert {"aggregates.person:Person.MemberAdded", "aggregates.token:Token.Rotated"} <= topics
    assert len(topics) == 14  # every event type 0.1.0 had (0.2.0 stores the same ones)


def test_new_calls_append_to_the_previous_release_log(legacy):
    name = f"upgrade-{uuid.uuid4().hex[:6]}"
    issued = pm_ops(legacy, "tokens", "issue", "--name", name, "--actor", "Upgrade Check")
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip().splitlines()[-1]

    with bootstrap(legacy) as services:
        client = testing.TestClient(create_app(services))
        response = client.simulate_post(
            "/api/v1/ops/people/communities/add",
            body=orjson.dumps(add_member_body(111, 42)),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "X-CIO-Idempotency-Key": f"{name}-1",
            },
        )
        assert response.status_code == 200, response.text
        assert response.json["data"]["attributes"]["alreadyMember"] is False

    rotated = pm_ops(legacy, "tokens", "rotate", "marketing-ops")  # a Token of 0.1.0
    assert rotated.exit_code == 0, rotated.output
    assert pm_ops(legacy, "projections", "run", "--once").exit_code == 0

    new = json_lines(legacy, "audit", "--token", name)
    assert [(e["operation"], e["person_id"], e["community_id"]) for e in new] == [
        ("issue-token", None, None),
        ("add-member", 111, 42),
    ]
    assert [e["operation"] for e in json_lines(legacy, "audit", "--token", "marketing-ops")][
        -1
    ] == "rotate-token"
    assert json_lines(legacy, "state", "--person", "111")[0]["communities"] == "7 42"
    verified = pm_ops(legacy, "verify")
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize("legacy", ["legacy_v0_1"], indirect=True)
def test_a_runner_rebuilds_an_old_layout_when_it_starts(legacy, caplog):
    caplog.set_level(logging.INFO, logger="pm_ops.projections")
    with bootstrap(legacy) as services:
        running = start_projections(
            legacy, ("audit",), app=services.app, poll_seconds=0.05, standby_seconds=0.1
        )
        try:
            views = services.read_models
            assert wait_until(lambda: not views.projection("audit").upgrade_pending(), 10)
            head = views.head()
            assert wait_until(lambda: views.audit.position() == head, 10)
        finally:
            running.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rebuilding from the log" in logged and "rebuilt up to position" in logged
    assert json_lines(legacy, "audit") == golden("audit.jsonl")
    assert pm_ops(legacy, "verify").exit_code == 0


def test_either_store_with_the_old_audit_layout_is_rebuilt_by_its_runner(
    config, services, client, directory
):
    """The 0.1.0 layout on PostgreSQL too: no versions table row, no emails table."""
    assert set_code(client, directory, directory.person_id, "VC-Old").status_code == 200
    assert pm_ops(config, "projections", "run", "--once").exit_code == 0
    before = json_lines(config, "audit")
    run_sql(
        config,
        f"DELETE FROM {config.table('ops_projection_versions')} WHERE name = 'audit'",
        f"DROP TABLE {config.table('ops_audit_emails')}",
    )
    assert status(config)["audit"]["rebuild_pending"]
    assert pm_ops(config, "audit", "--email", directory.email).exit_code != 0  # says why

    assert pm_ops(config, "projections", "run", "--once").exit_code == 0
    assert not status(config)["audit"]["rebuild_pending"]
    assert json_lines(config, "audit") == before
    assert json_lines(config, "audit", "--email", directory.email)[-1]["new_value"] == "VC-Old"
    assert pm_ops(config, "verify").exit_code == 0


def run_sql(config: Config, *statements: str) -> None:
    if config.is_postgres:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    with sqlite3.connect(config.store.sqlite_path) as conn:
        for statement in statements:
            conn.execute(statement)


def test_the_signed_checkpoints_of_a_0_2_store_still_check_and_new_ones_extend_them(tmp_path):
    source = DATA / "legacy_v0_2"
    shutil.copy(source / "ops.db", tmp_path / "ops.db")
    shutil.copytree(source / "witness", tmp_path / "witness")
    for note in (tmp_path / "witness").iterdir():
        note.chmod(0o644)
    from tests.test_checkpoints import ok
    from tests.test_checkpoints import pm_ops as signing_pm_ops

    config = Config(
        database_url=f"sqlite:///{tmp_path}/ops.db",
        checkpoint_key=str(source / "checkpoint-key.pem"),
        checkpoint_dir=str(tmp_path / "witness"),
    )
    published = sorted(int(p.stem) for p in (tmp_path / "witness").glob("*.note"))
    assert published and "1 signed checkpoint(s)" in ok(signing_pm_ops(config, "verify")).output
    issued = ok(signing_pm_ops(config, "tokens", "issue", "--name", "later", "--actor", "Later"))
    assert issued.stdout.strip()
    ok(signing_pm_ops(config, "projections", "run", "--once"))
    now = sorted(int(p.stem) for p in (tmp_path / "witness").glob("*.note"))
    assert len(now) == len(published) + 1 and now[:-1] == published
    assert "2 signed checkpoint(s)" in ok(signing_pm_ops(config, "verify")).output
