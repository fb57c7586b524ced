"""The checkpoints' other witnesses, each against a local fake of what it talks to: S3 with
Object Lock (moto's server), an RFC 3161 time-stamp authority, Slack; and the 0.1 store,
which gets its tree on upgrade and whose first checkpoint covers every event."""

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.config import Config
from projections import start_projections
from projections.runner import wait_until
from projections.timestamps import verify_timestamp
from tests.fake_slack import CHANNEL_NAME, FakeSlack
from tests.fake_tsa import FakeTSA
from tests.s3_server import s3_endpoint_fixture, s3_fixture  # noqa: F401
from tests.test_checkpoints import calls, ok, pm_ops, standalone, status_of

LEGACY = Path(__file__).parent / "data" / "legacy_v0_1"


@pytest.fixture
def signing(config, checkpoint_key):
    return replace(config, checkpoint_key=checkpoint_key)


def test_s3_keeps_each_note_under_compliance_lock_and_an_outage_queues_them(
    signing, services, client, directory, s3, caplog
):
    s3_config = replace(
        signing,
        checkpoint_s3=f"s3://{s3.bucket}/pm-ops",
        checkpoint_s3_endpoint=s3.endpoint_url,
        checkpoint_retention_days=30,
    )
    env = {
        "OPS_CHECKPOINT_S3": s3_config.checkpoint_s3,
        "OPS_CHECKPOINT_S3_ENDPOINT": s3.endpoint_url,
        "OPS_CHECKPOINT_RETENTION_DAYS": "30",
    }
    calls(client, directory, "a")
    ok(pm_ops(s3_config, "projections", "run", "--once", "--only", "checkpoints", env=env))
    size = services.app.recorder.max_notification_id()
    down = replace(s3_config, checkpoint_s3_endpoint="http://127.0.0.1:9")  # nothing listens
    running = start_projections(down, ("witness-s3",), app=services.app, poll_seconds=0.05)
    try:  # the witness retries while the checkpoint waits in its table
        assert wait_until(lambda: "http://127.0.0.1:9 could not be reached" in caplog.text, 30)
    finally:
        running.stop()
    assert "Traceback" not in caplog.text
    assert status_of(s3_config, env)["witness-s3"]["lag"] == size

    ok(pm_ops(s3_config, "projections", "run", "--once", "--only", "witness-s3", env=env))
    held = s3.client.get_object(Bucket=s3.bucket, Key=f"pm-ops/{size}.note")
    assert held["ObjectLockMode"] == "COMPLIANCE"
    until = held["ObjectLockRetainUntilDate"]
    assert timedelta(days=29) < until - datetime.now(UTC) < timedelta(days=31)
    assert (
        held["Body"].read() == ok(pm_ops(s3_config, "checkpoints", "show", str(size))).stdout_bytes
    )
    verified = pm_ops(s3_config, "verify", env=env)
    assert verified.exit_code == 0, verified.output


def test_each_note_is_time_stamped_by_every_authority_and_kept_beside_it(
    signing, services, client, directory, tmp_path
):
    first, second = FakeTSA().start(), FakeTSA().start()
    try:
        roots = tmp_path / "roots.pem"
        roots.write_bytes(first.authority.root_pem + second.authority.root_pem)
        witness = tmp_path / "witness"
        witness.mkdir()
        env = {
            "OPS_TSA_URLS": f"{first.url},{second.url}",
            "OPS_TSA_ROOTS": str(roots),
            "OPS_CHECKPOINT_DIR": str(witness),
        }
        second.faults = ["500"]  # down at first: the stamp waits, nothing is skipped
        calls(client, directory, "a")
        pm_ops(signing, "projections", "run", "--once", env=env)
        size = services.app.recorder.max_notification_id()
        ok(pm_ops(signing, "projections", "run", "--once", "--only", "witness-tsa", env=env))
    finally:
        first.stop()
        second.stop()
    note = (witness / f"{size}.note").read_bytes()
    for number, authority in enumerate((first, second)):
        token = (witness / f"{size}.tsr.{number}").read_bytes()
        when = verify_timestamp(token, note, [authority.authority.root])
        assert abs(when - datetime.now(UTC)) < timedelta(minutes=5)
    rows = ok(pm_ops(signing, "projections", "status", "--format", "json", env=env)).stdout
    [tsa] = [json.loads(row) for row in rows.splitlines() if '"witness-tsa"' in row]
    assert tsa["lag"] == 0 and tsa["position"] == size


def test_slack_gets_each_note_in_a_code_block_once_despite_server_errors(
    signing, services, client, directory
):
    slack = FakeSlack().start()
    try:
        env = {
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": slack.url,
            "OPS_CHECKPOINT_SLACK_CHANNEL": f"#{CHANNEL_NAME}",
        }
        calls(client, directory, "a")
        ok(pm_ops(signing, "projections", "run", "--once", "--only", "checkpoints", env=env))
        slack.faults = ["500", "accept_drop"]
        ok(pm_ops(signing, "projections", "run", "--once", "--only", "witness-slack", env=env))
        ok(pm_ops(signing, "projections", "run", "--once", "--only", "witness-slack", env=env))
    finally:
        slack.stop()
    size = services.app.recorder.max_notification_id()
    posts = [p for p in slack.posts if p.metadata["event_type"] == "pm_ops_checkpoint"]
    assert len(posts) == 1, [p.text for p in posts]
    note = ok(pm_ops(signing, "checkpoints", "show", str(size))).stdout
    assert f"```{note}```" in posts[0].body


def test_the_previous_release_store_gets_its_tree_and_a_first_checkpoint_of_every_event(
    tmp_path, checkpoint_key
):
    shutil.copy(LEGACY / "ops.db", tmp_path / "ops.db")
    legacy = Config(database_url=f"sqlite:///{tmp_path}/ops.db", checkpoint_key=checkpoint_key)
    ok(pm_ops(legacy, "projections", "run", "--once"))
    listed = ok(pm_ops(legacy, "checkpoints", "list", "--format", "json")).stdout.splitlines()
    [first] = [json.loads(line) for line in listed]
    events = ok(pm_ops(legacy, "projections", "status", "--format", "json")).stdout
    head = json.loads(events.splitlines()[0])["head"]
    assert first["size"] == head == first["position"]
    key = ok(pm_ops(legacy, "checkpoints", "key")).stdout.strip().splitlines()[-1]
    proof = json.loads(ok(pm_ops(legacy, "checkpoints", "prove", "--position", "1")).stdout)
    assert standalone("inclusion", key, proof, tmp_path).returncode == 0
    assert ok(pm_ops(legacy, "verify")).exit_code == 0  # the chain stays as it was
