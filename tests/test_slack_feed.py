"""The #ops-webhooks feed against a local fake Slack Web API, on both stores."""

import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import replace

import pytest

from projections import start_projections
from projections.runner import wait_until
from projections.store import open_views
from tests.conftest import new_id
from tests.fake_slack import FakeSlack
from tests.server import pm_ops
from tests.test_projections import add_member, caught_up, set_code, some_calls


@pytest.fixture
def fake_slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def feed_config(config, fake):
    return replace(
        config,
        slack_bot_token="xoxb-test-token",
        slack_api_url=fake.url,
        slack_channel="#ops-webhooks",
    )


def key_counts(fake: FakeSlack) -> Counter:
    return Counter(re.findall(r"key `([^`]+)`", "\n".join(fake.lines())))


def test_a_burst_of_60_calls_is_paced_grouped_and_posted_exactly_once(
    config, services, client, directory, fake_slack
):
    running = start_projections(feed_config(config, fake_slack), ("slack",), poll_seconds=0.05)
    try:
        tag = uuid.uuid4().hex[:6]
        keys = []
        for i in range(60):
            key = f"burst-{tag}-{i:02d}"
            keys.append(key)
            if i % 10 == 9:
                assert add_member(client, directory, new_id(), key=key).status_code == 404
            elif i % 2:
                set_code(client, directory, directory.person_id, f"VC-{i}", key=key)
            else:
                add_member(client, directory, directory.person_id, key=key)
            time.sleep(0.05)  # ~20 calls a second for ~3 s: faster than one post a second
        assert wait_until(lambda: set(keys) <= set(key_counts(fake_slack)), 30)
        assert wait_until(lambda: caught_up(services.app, config, "slack"), 10)
    finally:
        running.stop()

    counts = key_counts(fake_slack)
    assert all(counts[k] == 1 for k in keys), {k: counts[k] for k in keys if counts[k] != 1}
    posts = fake_slack.posts
    assert 3 <= len(posts) < 20, "calls arriving faster than 1/s must be grouped"
    assert max(len(p.body.splitlines()) for p in posts) > 1
    gaps = [b.at - a.at for a, b in zip(posts, posts[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    for post in posts:
        assert len(post.blocks) <= 50
        assert all(len(b["text"]["text"]) <= 3000 for b in post.blocks)
        assert post.metadata["event_type"] == "pm_ops_feed"
        payload = post.metadata["event_payload"]
        assert payload["first"] <= payload["last"]
    text = "\n".join(fake_slack.lines())
    assert "404 person_not_found" in text and "nothing changed" in text and "→" in text
    assert directory.token not in text and "pmo_" not in text


def test_429_500_and_lost_connections_are_retried_without_duplicates(
    config, services, client, directory, fake_slack
):
    keys = some_calls(client, directory)
    fake_slack.faults = ["429", "500", "drop", "accept_drop"]
    running = start_projections(feed_config(config, fake_slack), ("slack",), poll_seconds=0.05)
    try:
        assert wait_until(lambda: caught_up(services.app, config, "slack"), 30)
    finally:
        running.stop()
    counts = key_counts(fake_slack)
    assert all(counts[k] == 1 for k in keys), counts
    # 429, 500, dropped, accepted-but-unanswered: found in the history, not re-posted
    assert fake_slack.attempts == 4
    assert len(fake_slack.posts) == 1  # the accepted-but-unanswered post counted


def test_a_crash_between_post_and_commit_posts_nothing_twice(
    config, services, client, directory, fake_slack
):
    env = {
        **os.environ,
        "OPS_DATABASE_URL": config.database_url,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": fake_slack.url,
        "OPS_SLACK_CHANNEL": "#ops-webhooks",
    }
    command = [pm_ops(), "projections", "run", "--only", "slack", "--poll", "0.1"]
    views = open_views(services.app, config)
    before = some_calls(client, directory, "before")

    # Slack accepts the first post; the runner is killed before it can commit.
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fake_slack.on_accept = lambda _post: os.kill(first.pid, signal.SIGKILL)
    try:
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    fake_slack.on_accept = None
    assert len(fake_slack.posts) == 1
    assert views.position("slack") == 0  # posted, never committed

    after = some_calls(client, directory, "after")
    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: caught_up(services.app, config, "slack"), 30)
    finally:
        second.terminate()
        second.wait(timeout=15)
    counts = key_counts(fake_slack)
    assert all(counts[k] == 1 for k in before + after), counts
    assert len(fake_slack.posts) == 2


def test_without_a_bot_token_the_feed_goes_to_the_log(config, services, client, directory, caplog):
    keys = some_calls(client, directory)
    caplog.set_level("INFO", logger="pm_ops.feed")
    running = start_projections(config, ("slack",), poll_seconds=0.05)
    try:
        assert wait_until(lambda: caught_up(services.app, config, "slack"), 10)
    finally:
        running.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "pm_ops.feed")
    for key in keys:
        assert logged.count(f"key `{key}`") == 1


def test_slack_refusing_connections_logs_one_line_per_retry_and_no_traceback(
    config, services, client, directory, caplog
):
    import socket

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/api/"
    some_calls(client, directory)
    caplog.set_level("INFO")
    unreachable = replace(config, slack_bot_token="xoxb-test-token", slack_api_url=closed)
    running = start_projections(unreachable, ("slack",), poll_seconds=0.05)
    try:
        assert wait_until(
            lambda: sum("retrying in" in r.getMessage() for r in caplog.records) >= 2, 15
        )
    finally:
        running.stop()
    assert not [r for r in caplog.records if r.exc_info], "an outage is not a traceback"
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert all(r.levelname == "WARNING" and "\n" not in r.getMessage() for r in retries)
    assert "xoxb-test-token" not in caplog.text
    assert services.app.recorder.max_notification_id() > open_views(services.app, config).position(
        "slack"
    )
