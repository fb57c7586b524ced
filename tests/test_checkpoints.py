"""Signed checkpoints (SPEC §10), through the CLI on both stores: the tree follows the
log, checkpoints are signed and kept by a witness directory, proofs check out with the
standalone verifier and with Go's own reader, and an event edited in SQL — with every
other table dropped and rebuilt — is caught by `verify` against what was published."""

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from click.testing import CliRunner

from api.cli import COMMAND_MODULES, cli
from projections import start_projections
from projections.runner import wait_until
from tests.conftest import POSTGRES_URL
from tests.fake_slack import FakeSlack
from tests.test_go_reader import checkproof, go_check  # noqa: F401 - a fixture and its use
from tests.test_projections import add_member, set_code

TRANSPARENCY = Path(__file__).resolve().parent.parent / "projections" / "transparency.py"


@pytest.fixture
def witnessed(config, checkpoint_key, tmp_path):
    """The config with a signing key and a witness directory."""
    directory = tmp_path / "witness"
    directory.mkdir()
    return replace(config, checkpoint_key=checkpoint_key, checkpoint_dir=str(directory))


def env_of(config) -> dict[str, str]:
    env = {"OPS_DATABASE_URL": config.database_url}
    for variable, value in (
        ("OPS_CHECKPOINT_KEY", config.checkpoint_key),
        ("OPS_CHECKPOINT_DIR", config.checkpoint_dir),
        ("OPS_SECRET_KEY", config.secret_key),
    ):
        if value:
            env[variable] = value
    return env


def pm_ops(config, *args: str, env: dict[str, str] | None = None) -> Any:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"api.cli.{name}").register(cli)
    return CliRunner().invoke(cli, list(args), env={**env_of(config), **(env or {})})


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return result


def standalone(kind: str, key: str, document: dict[str, Any], tmp_path: Path) -> Any:
    """The auditor's way: the one file, run by the system's Python, isolated from pm-ops."""
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(document))
    python = shutil.which("python3") or sys.executable
    return subprocess.run(
        [python, "-I", str(TRANSPARENCY), kind, "--key", key, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def calls(client, directory, tag: str) -> None:
    assert add_member(client, directory, directory.person_id, key=f"{tag}-1").status_code == 200
    assert (
        set_code(client, directory, directory.person_id, f"VC-{tag}", key=f"{tag}-2").status_code
        == 200
    )


def test_checkpoints_are_signed_kept_by_the_witness_and_proven(
    witnessed,
    services,
    client,
    directory,
    tmp_path,
    checkproof,  # noqa: F811
):
    calls(client, directory, "a")
    ok(pm_ops(witnessed, "projections", "run", "--once"))
    head = services.app.recorder.max_notification_id()
    key = ok(pm_ops(witnessed, "checkpoints", "key")).stdout.strip().splitlines()[-1]
    listed = [
        json.loads(line)
        for line in ok(
            pm_ops(witnessed, "checkpoints", "list", "--format", "json")
        ).stdout.splitlines()
    ]
    assert [c["size"] for c in listed] == [head] and listed[0]["position"] == head
    first = listed[0]["size"]
    note = Path(witnessed.checkpoint_dir, f"{first}.note").read_bytes()
    assert ok(pm_ops(witnessed, "checkpoints", "show", str(first))).stdout_bytes == note
    assert note.decode().startswith(f"127.0.0.1:8000/pm-ops\n{first}\n")

    calls(client, directory, "b")
    ok(pm_ops(witnessed, "projections", "run", "--once"))
    second = services.app.recorder.max_notification_id()
    assert sorted(p.name for p in Path(witnessed.checkpoint_dir).iterdir()) == sorted(
        [f"{first}.note", f"{second}.note"]
    )

    for position in (1, first, second):
        proof = json.loads(
            ok(pm_ops(witnessed, "checkpoints", "prove", "--position", str(position))).stdout
        )
        assert proof["tree_size"] == second and proof["position"] == position
        checked = standalone("inclusion", key, proof, tmp_path)
        assert checked.returncode == 0 and checked.stdout.startswith("OK:"), checked.stderr
        assert go_check(checkproof, "inclusion", key, proof) == "ok"
    older = json.loads(
        ok(
            pm_ops(witnessed, "checkpoints", "prove", "--position", "2", "--size", str(first))
        ).stdout
    )
    assert older["tree_size"] == first
    assert standalone("inclusion", key, older, tmp_path).returncode == 0
    consistency = json.loads(
        ok(
            pm_ops(
                witnessed, "checkpoints", "consistency", "--from", str(first), "--to", str(second)
            )
        ).stdout
    )
    assert standalone("consistency", key, consistency, tmp_path).returncode == 0
    assert go_check(checkproof, "consistency", key, consistency) == "ok"

    not_yet = pm_ops(witnessed, "checkpoints", "prove", "--position", str(second + 50))
    assert not_yet.exit_code == 1 and "Traceback" not in not_yet.output
    verified = ok(pm_ops(witnessed, "verify"))
    assert "2 signed checkpoint(s)" in verified.output


def edit_an_event(config, position: int, old: bytes, new: bytes) -> None:
    if config.is_postgres:
        table = f'"{config.schema}".pmops_events'
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            (state,) = conn.execute(
                f"SELECT state FROM {table} WHERE notification_id=%s", (position,)
            ).fetchone()
            assert old in bytes(state)
            conn.execute(
                f"UPDATE {table} SET state=%s WHERE notification_id=%s",
                (bytes(state).replace(old, new), position),
            )
        return
    with sqlite3.connect(config.store.sqlite_path) as conn:
        (state,) = conn.execute(
            "SELECT state FROM stored_events WHERE rowid=?", (position,)
        ).fetchone()
        assert old in bytes(state)
        conn.execute(
            "UPDATE stored_events SET state=? WHERE rowid=?",
            (bytes(state).replace(old, new), position),
        )


def drop_every_other_table(config) -> None:
    if config.is_postgres:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname=%s", (config.schema,)
                )
            ]
            for table in tables:
                if table != "pmops_events":
                    conn.execute(f'DROP TABLE "{config.schema}"."{table}" CASCADE')
        return
    with sqlite3.connect(config.store.sqlite_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            if table not in ("stored_events", "sqlite_sequence"):
                conn.execute(f'DROP TABLE "{table}"')


def test_an_edited_event_is_caught_against_the_published_checkpoint_after_a_full_rebuild(
    witnessed, services, client, directory
):
    calls(client, directory, "a")
    ok(pm_ops(witnessed, "projections", "run", "--once"))
    size = services.app.recorder.max_notification_id()
    entries = [
        json.loads(line)
        for line in ok(
            pm_ops(witnessed, "audit", "--format", "json", "--operation", "set-code")
        ).stdout.splitlines()
    ]
    edited = entries[-1]["position"]
    edit_an_event(witnessed, edited, b'"VC-a"', b'"VC-z"')
    drop_every_other_table(witnessed)

    rebuilt = pm_ops(witnessed, "projections", "run", "--once")
    assert rebuilt.exit_code != 0
    assert f"the published checkpoint of size {size}" in rebuilt.output
    verified = pm_ops(witnessed, "verify")
    assert verified.exit_code == 1, verified.output
    assert f"the log no longer matches the checkpoint of size {size}" in verified.output
    assert f"{witnessed.checkpoint_dir}/{size}.note" in verified.output
    assert "Traceback" not in verified.output
    # An auditor with only the verifier key and the directory gets the same answer.
    key = key_of(witnessed)
    auditor = pm_ops(
        replace(witnessed, checkpoint_key=None, checkpoint_dir=None),
        "verify",
        "--checkpoints",
        witnessed.checkpoint_dir,
        "--key",
        key,
    )
    assert auditor.exit_code == 1 and f"checkpoint of size {size}" in auditor.output


def key_of(config) -> str:
    return ok(pm_ops(config, "checkpoints", "key")).stdout.strip().splitlines()[-1]


# --- bad notes, bad keys ----------------------------------------------------------


def other_key(tmp_path: Path) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    path = tmp_path / "other.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    path.write_bytes(pem)
    return str(path)


def resign(note: bytes, key_path: str, origin: str, size: int) -> bytes:
    """The same checkpoint body, signed by the key in `key_path` under `origin`."""
    from projections.checkpoints import Signer
    from projections.transparency import parse_checkpoint

    body = note.split(b"\n\n")[0] + b"\n"
    return Signer(key_path, origin).sign(size, parse_checkpoint(body).root)


@pytest.mark.parametrize("config", ["sqlite"], indirect=True)
@pytest.mark.parametrize("damage", ["one byte", "another key", "another origin", "truncated"])
def test_verify_names_a_bad_note_and_what_is_wrong(witnessed, client, directory, tmp_path, damage):
    calls(client, directory, "a")
    ok(pm_ops(witnessed, "projections", "run", "--once"))
    [path] = Path(witnessed.checkpoint_dir).glob("*.note")
    note, size = path.read_bytes(), int(path.stem)
    path.chmod(0o644)
    if damage == "one byte":
        path.write_bytes(note.replace(b"pm-ops\n", b"pm-ops\n", 1)[:-10] + b"A" + note[-9:])
        expected = "signature"
    elif damage == "another key":
        path.write_bytes(resign(note, other_key(tmp_path), "127.0.0.1:8000/pm-ops", size))
        expected = "not by the key given"
    elif damage == "another origin":
        path.write_bytes(resign(note, witnessed.checkpoint_key, "elsewhere.example/pm-ops", size))
        expected = "signed by elsewhere.example/pm-ops"
    else:
        path.write_bytes(note[: len(note) // 2])
        expected = ""
    result = pm_ops(witnessed, "verify")
    assert result.exit_code == 1
    assert f"{path}: " in result.output, result.output
    assert expected.lower() in result.output.lower()
    assert "Traceback" not in result.output


@pytest.mark.parametrize("config", ["sqlite"], indirect=True)
def test_a_key_file_that_cannot_be_used_is_a_clear_error_at_start(config, tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for path, says in (
        (tmp_path / "missing.pem", "cannot read"),
        (not_pem, "not an unencrypted PEM"),
    ):
        env = {
            **os.environ,
            "OPS_DATABASE_URL": config.database_url,
            "OPS_CHECKPOINT_KEY": str(path),
        }
        done = subprocess.run(
            [
                shutil.which("pm-ops", path=str(Path(sys.executable).parent)),
                "projections",
                "status",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"OPS_CHECKPOINT_KEY: {path}" in done.stderr or "OPS_CHECKPOINT_KEY:" in done.stderr
        assert says in done.stderr and "Traceback" not in done.stderr


def status_of(config, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    result = ok(pm_ops(config, "projections", "status", "--format", "json", env=env))
    return {row["projection"]: row for row in map(orjson.loads, result.stdout.splitlines())}


def test_a_key_removed_at_run_time_stops_the_checkpoints_alone_with_one_clear_error(
    witnessed, services, client, directory, caplog
):
    caplog.set_level(logging.INFO)
    names = ("state", "checkpoints")
    running = start_projections(witnessed, names, app=services.app, poll_seconds=0.05)
    try:
        calls(client, directory, "a")
        assert wait_until(lambda: status_of(witnessed)["checkpoints"]["lag"] == 0, 20)
        moved = Path(witnessed.checkpoint_key).with_suffix(".away")
        Path(witnessed.checkpoint_key).rename(moved)
        for runner in running.runners:
            runner.follower.interval = 0  # sign at the next catch-up
        calls(client, directory, "b")
        head = services.app.recorder.max_notification_id()
        assert wait_until(lambda: "cannot read" in caplog.text, 20)
        assert wait_until(lambda: services.read_models.views.position("state") == head, 20)
    finally:
        running.stop()
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and "OPS_CHECKPOINT_KEY" in r.getMessage()
    ]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None  # no traceback
    moved.rename(witnessed.checkpoint_key)
    status = status_of(witnessed)
    assert "cannot read" in (status["checkpoints"]["stuck"] or "")
    assert status["state"]["lag"] == 0


# --- witnesses ------------------------------------------------------------------


def test_a_witness_that_is_down_lets_checkpoints_queue_and_skips_none(
    witnessed, services, client, directory
):
    kept = Path(witnessed.checkpoint_dir)
    away = kept.with_name("witness-away")
    kept.rename(away)  # the off-host mount is gone
    sizes = []
    for tag in ("a", "b"):
        calls(client, directory, tag)
        result = pm_ops(witnessed, "projections", "run", "--once", "--only", "checkpoints")
        ok(result)
        sizes.append(services.app.recorder.max_notification_id())
    ok(pm_ops(witnessed, "projections", "run", "--once", "--only", "state"))
    status = status_of(witnessed)
    assert status["witness-directory"]["lag"] == sizes[-1], status["witness-directory"]
    assert status["state"]["lag"] == 0  # the rest goes on

    away.rename(kept)
    ok(pm_ops(witnessed, "projections", "run", "--once", "--only", "witness-directory"))
    assert sorted(int(p.stem) for p in kept.glob("*.note")) == sizes
    assert status_of(witnessed)["witness-directory"]["lag"] == 0


def test_a_witness_holding_a_contradicting_checkpoint_refuses_it_and_raises_the_alarm(
    witnessed, services, client, directory, caplog
):
    from projections.checkpoints import Signer

    calls(client, directory, "a")
    ok(pm_ops(witnessed, "projections", "run", "--once", "--only", "checkpoints"))
    size = services.app.recorder.max_notification_id()
    forged = Signer(witnessed.checkpoint_key, "127.0.0.1:8000/pm-ops").sign(size, b"\x07" * 32)
    Path(witnessed.checkpoint_dir, f"{size}.note").write_bytes(forged)  # a rewritten history

    alarms: list[str] = []
    caplog.set_level(logging.INFO)
    slack = FakeSlack().start()
    alarmed = replace(witnessed, slack_bot_token="xoxb-test", slack_api_url=slack.url)
    running = start_projections(
        alarmed,
        ("witness-directory",),
        app=services.app,
        poll_seconds=0.05,
        on_alarm=alarms.append,
    )
    try:
        assert wait_until(lambda: alarms == ["witness-directory"], 20)  # the metric
        assert wait_until(lambda: any("refuses the checkpoint" in p.text for p in slack.posts), 10)
    finally:
        running.stop()
        slack.stop()
    assert "ALARM: witness witness-directory refuses the checkpoint" in caplog.text
    assert Path(witnessed.checkpoint_dir, f"{size}.note").read_bytes() == forged  # kept as it was
    status = status_of(witnessed)
    assert "refuses the checkpoint" in status["witness-directory"]["stuck"]
    verified = pm_ops(witnessed, "verify")
    assert verified.exit_code == 1 and "witness-directory" in verified.output
