"""The Customer.io profile-sync feed against a local fake Track API, on both stores."""

import os
import signal
import subprocess
import time
from dataclasses import replace

import orjson
import pytest
from click.testing import CliRunner

from api.cli import cio, cli, projections
from projections import start_projections
from projections.runner import wait_until
from tests.conftest import set_code_body
from tests.fake_customerio import API_KEY, SITE_ID, FakeCustomerIO
from tests.server import pm_ops
from tests.test_projections import CODE, add_member, caught_up, set_code

ULID_CHARS = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@pytest.fixture
def fake_cio():
    fake = FakeCustomerIO().start()
    yield fake
    fake.stop()


def cio_config(config, fake):
    return replace(config, cio_site_id=SITE_ID, cio_track_api_key=API_KEY, cio_track_url=fake.url)


def running_feed(config, services, fake):
    """The feed in this process, started (at the head of the log) before the calls."""
    running = start_projections(cio_config(config, fake), ("customerio",), poll_seconds=0.05)
    assert wait_until(lambda: caught_up(services.app, config, "customerio"), 10)
    return running


def set_code_by_email(client, directory, email, code, key=None):
    body = orjson.dumps(set_code_body(None, email=email, code=code))
    return client.simulate_post(CODE, body=body, headers=directory.headers(key))


def invoke(config, fake, *args):
    cio.register(cli)
    projections.register(cli)
    env = {**fake.env(), "OPS_DATABASE_URL": config.database_url}
    return CliRunner().invoke(cli, list(args), env=env)


def test_changes_arrive_with_full_values_under_the_identifier_the_call_used(
    config, services, client, directory, fake_cio
):
    person, community, email = directory.person_id, directory.community_id, directory.email
    running = running_feed(config, services, fake_cio)
    try:
        assert add_member(client, directory, person, key="k1").status_code == 200
        assert add_member(client, directory, person, key="k1").status_code == 200  # replay
        assert add_member(client, directory, person, key="k2").status_code == 200  # no-op
        assert set_code_by_email(client, directory, f" {email} ", "VC-1").status_code == 200
        assert set_code(client, directory, person, None).status_code == 200
        assert set_code(client, directory, 999_999_999_999, "X").status_code == 404
        assert wait_until(lambda: caught_up(services.app, config, "customerio"), 10)
    finally:
        running.stop()

    by_id, by_email = fake_cio.events_of(str(person)), fake_cio.events_of(email)
    assert [e["name"] for e in by_id] == ["community_joined", "signup_code_changed"]
    assert by_id[0]["data"] == {"community_id": community}
    assert by_id[1]["data"] == {"previous_code": "VC-1", "new_code": None}
    assert [e["data"] for e in by_email] == [{"previous_code": None, "new_code": "VC-1"}]
    assert len(fake_cio.events) == 3, "no-ops, replays and refused calls send nothing"
    for event in by_id + by_email:
        assert len(event["id"]) == 26 and set(event["id"]) <= ULID_CHARS
        assert isinstance(event["timestamp"], int) and abs(event["timestamp"] - time.time()) < 60
    assert fake_cio.profiles[str(person)] == {
        "signup_code": None,
        "communities": [community],
        "pm_ops_updated_at": by_id[1]["timestamp"],
    }
    assert fake_cio.profiles[email]["signup_code"] == "VC-1"
    assert fake_cio.profiles[email]["communities"] == [community]
    puts = [r.body for r in fake_cio.requests if r.method == "PUT"]
    assert all(set(body) == {"signup_code", "communities", "pm_ops_updated_at"} for body in puts)


def test_429_waits_for_retry_after(config, services, client, directory, fake_cio):
    running = running_feed(config, services, fake_cio)
    fake_cio.faults = ["429"]
    fake_cio.retry_after = 2
    try:
        assert set_code(client, directory, directory.person_id, "VC-429").status_code == 200
        assert wait_until(lambda: len(fake_cio.events) == 1, 15)
    finally:
        running.stop()
    first, second = fake_cio.requests[0], fake_cio.requests[1]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.9


def test_an_outage_loses_nothing_and_logs_no_traceback(
    config, services, client, directory, fake_cio, caplog
):
    caplog.set_level("INFO", logger="pm_ops.feed")
    running = running_feed(config, services, fake_cio)
    try:
        fake_cio.down()
        codes = [f"VC-out-{i}" for i in range(3)]
        for code in codes:
            assert set_code(client, directory, directory.person_id, code).status_code == 200
        assert wait_until(lambda: "unreachable" in caplog.text, 10)
        assert not caught_up(services.app, config, "customerio")
        time.sleep(1.0)
        fake_cio.up()
        assert wait_until(lambda: caught_up(services.app, config, "customerio"), 20)
    finally:
        running.stop()
    sent = [e["data"]["new_code"] for e in fake_cio.events_of(str(directory.person_id))]
    assert sent == codes
    assert fake_cio.profiles[str(directory.person_id)]["signup_code"] == codes[-1]
    assert not [r for r in caplog.records if r.exc_info]
    assert API_KEY not in caplog.text


def test_a_kept_alive_connection_the_server_closed_is_no_failure(
    config, services, client, directory, fake_cio, caplog
):
    caplog.set_level("INFO", logger="pm_ops.feed")
    running = running_feed(config, services, fake_cio)
    try:
        assert set_code(client, directory, directory.person_id, "VC-a").status_code == 200
        assert wait_until(lambda: len(fake_cio.events) == 1, 10)
        time.sleep(0.2)
        fake_cio.drop_connections()  # as a server does with an idle connection
        time.sleep(0.2)
        assert set_code(client, directory, directory.person_id, "VC-b").status_code == 200
        assert wait_until(lambda: len(fake_cio.events) == 2, 10)
    finally:
        running.stop()
    assert "delivery failed" not in caplog.text


def test_killing_the_feed_mid_batch_counts_no_event_twice(
    config, services, client, directory, fake_cio
):
    env = {**os.environ, **fake_cio.env(), "OPS_DATABASE_URL": config.database_url}
    run = [pm_ops(), "projections", "run", "--only", "customerio", "--poll", "0.1"]
    subprocess.run([*run, "--once"], env=env, check=True, capture_output=True, timeout=60)
    people = (directory.person_id, directory.other_person_id)
    codes = [(people[i % 2], f"VC-{i}") for i in range(8)]
    for person, code in codes:  # written while no feed runs: one batch of 8 changes
        assert set_code(client, directory, person, code).status_code == 200

    first = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fake_cio.on_event = lambda _e: len(fake_cio.events) == 3 and os.kill(first.pid, signal.SIGKILL)
    try:
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    fake_cio.on_event = None
    assert len(fake_cio.events) == 3 and not caught_up(services.app, config, "customerio")

    second = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: caught_up(services.app, config, "customerio"), 30)
    finally:
        second.terminate()
        second.wait(timeout=15)
    assert max(fake_cio.event_posts.values()) == 2, "the batch was sent again after the crash"
    assert len(fake_cio.events) == 8, "but Customer.io keeps each event once, by its id"
    for person in people:
        sent = [e["data"]["new_code"] for e in fake_cio.events_of(str(person))]
        assert sent == [code for who, code in codes if who == person]
        assert fake_cio.profiles[str(person)]["signup_code"] == sent[-1]


def test_a_permanent_refusal_is_listed_the_feed_goes_on_and_resync_retries_it(
    config, services, client, directory, fake_cio
):
    email = directory.email
    fake_cio.refuse = {email}
    running = running_feed(config, services, fake_cio)
    try:
        assert set_code_by_email(client, directory, email, "VC-bad").status_code == 200
        assert add_member(client, directory, directory.other_person_id).status_code == 200
        assert wait_until(lambda: caught_up(services.app, config, "customerio"), 15)
    finally:
        running.stop()
    assert fake_cio.events_of(str(directory.other_person_id)), "the feed went on"

    listed = invoke(config, fake_cio, "cio", "failures", "--format", "json")
    assert listed.exit_code == 0, listed.output
    [failure] = [orjson.loads(line) for line in listed.output.splitlines()]
    assert failure["person_id"] == directory.person_id and failure["identifier"] == email
    assert failure["status"] == 400 and "identifier is not valid" in failure["answer"]
    status = invoke(config, fake_cio, "projections", "status", "--format", "json")
    rows = {row["projection"]: row for row in map(orjson.loads, status.output.splitlines())}
    assert rows["customerio"]["failures"] == 1

    fake_cio.refuse = set()
    again = invoke(config, fake_cio, "cio", "resync", "--person", str(directory.person_id))
    assert again.exit_code == 0, again.output
    assert fake_cio.profiles[email]["signup_code"] == "VC-bad"
    assert [e["data"]["new_code"] for e in fake_cio.events_of(email)] == ["VC-bad"]
    assert invoke(config, fake_cio, "cio", "failures", "--format", "json").output == ""


def test_resync_all_pushes_current_values_and_is_idempotent(
    config, services, client, directory, fake_cio
):
    assert add_member(client, directory, directory.person_id).status_code == 200
    assert set_code(client, directory, directory.other_person_id, "VC-all").status_code == 200
    first = invoke(config, fake_cio, "cio", "resync", "--all")
    assert first.exit_code == 0, first.output
    after_first = {k: dict(v) for k, v in fake_cio.profiles.items()}
    second = invoke(config, fake_cio, "cio", "resync", "--all")
    assert second.exit_code == 0, second.output
    assert fake_cio.profiles == after_first
    assert after_first[str(directory.person_id)]["communities"] == [directory.community_id]
    assert after_first[str(directory.other_person_id)]["signup_code"] == "VC-all"
    assert set(after_first) == {str(directory.person_id), str(directory.other_person_id)}
    assert not fake_cio.events, "a resync pushes values; events belong to changes"
    assert "2 profile(s) pushed" in second.output


def test_without_credentials_the_feed_is_off_and_status_says_so(config, services, fake_cio):
    cio.register(cli)
    projections.register(cli)
    result = CliRunner().invoke(
        cli,
        ["projections", "status", "--format", "json"],
        env={"OPS_DATABASE_URL": config.database_url, "CIO_SITE_ID": "", "CIO_TRACK_API_KEY": ""},
    )
    rows = {row["projection"]: row for row in map(orjson.loads, result.output.splitlines())}
    assert rows["customerio"]["runner"].startswith("off: set CIO_SITE_ID and CIO_TRACK_API_KEY")


def test_an_interrupted_resync_all_resumes_where_it_stopped(
    config, services, client, directory, fake_cio
):
    from projections.customerio_resync import ResyncAll
    from projections.store import open_views

    assert add_member(client, directory, directory.person_id).status_code == 200
    assert set_code(client, directory, directory.other_person_id, "VC-r").status_code == 200
    settings = cio_config(config, fake_cio).customerio
    job = ResyncAll(services.app, open_views(services.app, config), settings)
    run = job.run(restart=False, sleep=time.sleep, progress=lambda done, total: None)
    next(run)  # one person pushed, then the run is interrupted
    run.close()
    assert job.resume_after() is not None
    assert len([r for r in fake_cio.requests if r.method == "PUT"]) == 1

    resumed = invoke(config, fake_cio, "cio", "resync", "--all")
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming" in resumed.output and "1 profile(s) pushed" in resumed.output
    assert set(fake_cio.profiles) == {str(directory.person_id), str(directory.other_person_id)}
    assert job.resume_after() is None


def started(app, config) -> bool:
    try:
        return caught_up(app, config, "customerio")
    except Exception:  # the server's projections have not made their tables yet
        return False


def test_failed_syncs_and_lag_reach_metrics(config, services, directory, fake_cio):
    import urllib.request

    from tests.server import running_server

    fake_cio.refuse = {directory.email}
    with running_server(config.database_url, env=fake_cio.env()) as base:
        # the feed starts at the head of the log; then the call comes
        assert wait_until(lambda: started(services.app, config), 20)
        body = orjson.dumps(set_code_body(None, email=directory.email, code="VC-m"))
        request = urllib.request.Request(base + CODE, body, directory.headers(), method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        metrics = ""
        deadline = time.monotonic() + 20
        while 'pm_ops_feed_failed_syncs{feed="customerio"} 1.0' not in metrics:
            assert time.monotonic() < deadline, metrics
            time.sleep(0.5)
            metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    assert 'pm_ops_projection_lag{projection="customerio"}' in metrics
    assert API_KEY not in metrics


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CIO_REGION", "asia", "CIO_REGION must be us or eu"),
        ("CIO_SYNC_RATE", "500", "at most 100"),
        ("CIO_TRACK_URL", "track.example.com", "CIO_TRACK_URL must start with https://"),
    ],
)
def test_a_wrong_setting_is_a_plain_error(tmp_path, variable, value, says):
    env = {
        **os.environ,
        "OPS_DATABASE_URL": f"sqlite:///{tmp_path}/ops.db",
        "CIO_SITE_ID": SITE_ID,
        "CIO_TRACK_API_KEY": API_KEY,
        variable: value,
    }
    done = subprocess.run(
        [pm_ops(), "cio", "failures"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and API_KEY not in done.stderr


def test_calls_made_before_the_feed_first_runs_still_reach_customerio(
    config, services, directory, fake_cio
):
    """The feed begins where the first process with its settings started, not where its
    runner first ran: here the API serves (without projections) and takes calls as soon
    as /healthz answers, and the feed runs for the first time only afterwards."""
    import urllib.request

    from tests.server import running_server

    person = directory.person_id
    with running_server(config.database_url, "--no-projections", env=fake_cio.env()) as base:
        for code in ("VC-early-1", "VC-early-2"):
            body = orjson.dumps(set_code_body(person, code=code))
            request = urllib.request.Request(base + CODE, body, directory.headers(), method="POST")
            assert urllib.request.urlopen(request, timeout=10).status == 200
    assert fake_cio.events == {}
    result = invoke(config, fake_cio, "projections", "run", "--once", "--only", "customerio")
    assert result.exit_code == 0, result.output
    sent = fake_cio.events_of(str(person))
    assert [event["data"]["new_code"] for event in sent] == ["VC-early-1", "VC-early-2"]
    assert fake_cio.profiles[str(person)]["signup_code"] == "VC-early-2"
