"""The real server while its PostgreSQL is down: quick 503s, a quick /readyz, a quick
recovery; the first call after PostgreSQL went away does not try every pooled connection
it broke, and a connection dropped while PostgreSQL stays up is no outage."""

import json
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.conftest import add_member_body
from tests.pg_cluster import wait_until
from tests.pg_relay import Relay
from tests.server import ADD, descendants, get, post, running_server, running_server_process, seed

POST_BOUND = 2.0
READY_BOUND = 1.0
RECOVERY_BOUND = 5.0
OUTAGE_SECONDS = 8.0


def test_store_down_answers_503_within_bounds_then_recovers(cluster):
    data = seed(cluster.url)
    body = add_member_body(data.people[0], data.communities[0])
    with running_server_process(cluster.url, "--no-projections", "--workers", "2") as (
        base,
        serve,
    ):
        assert post(base, ADD, body, data.token, str(uuid.uuid4()))[0] == 200
        cluster.stop()
        try:
            # A worker that dies now comes back without the store, and serves 503s too.
            os.kill(sorted(descendants(serve.pid))[0], signal.SIGKILL)
            time.sleep(1)  # (calls it had in hand are lost with it: that is not the point)
            with ThreadPoolExecutor(40) as pool:
                answers = list(
                    pool.map(
                        lambda _: post(base, ADD, body, data.token, str(uuid.uuid4()), 10),
                        range(40),
                    )
                )
            # A long outage too: the pool's reconnection backs off meanwhile.
            ready, later = [], []
            deadline = time.monotonic() + OUTAGE_SECONDS
            while time.monotonic() < deadline:
                ready.append(get(base, "/readyz", 10))
                later.append(post(base, ADD, body, data.token, str(uuid.uuid4()), 10))
        finally:
            cluster.start()
        slowest = max(seconds for _, _, seconds in answers + later)
        assert {status for status, _, _ in answers + later} == {503}, answers
        assert json.loads(answers[0][1])["errors"][0]["code"] == "unavailable"
        assert slowest < POST_BOUND, f"slowest 503 took {slowest:.2f} s"
        assert {status for status, _, _ in ready} == {503}
        assert max(seconds for _, _, seconds in ready) < READY_BOUND

        # Recovered: every worker answers (ten calls in a row, spread over the workers).
        recovered = wait_until(
            lambda: all(
                post(base, ADD, body, data.token, str(uuid.uuid4()), 5)[0] == 200
                and get(base, "/readyz", 5)[0] == 200
                for _ in range(10)
            ),
            timeout=RECOVERY_BOUND,
        )
        assert serve.poll() is None, "serve outlived the outage"
        print(f"outage: slowest 503 {slowest:.2f} s; recovered {recovered:.2f} s after restart")


def warm(base: str) -> None:
    """Calls at once, so the API's pool holds several connections."""
    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(lambda _: get(base, "/readyz")[0], range(200))) == {200}


def test_the_first_readyz_after_the_store_stops_tries_one_broken_connection_not_all(cluster):
    relay = Relay(cluster.port).start()
    try:
        seed(cluster.url)
        with running_server(relay.url(), "--no-projections") as base:
            warm(base)
            pooled = relay.open_upstreams
            assert pooled >= 2, "the pool holds several connections"
            cluster.stop()
            try:
                wait_until(lambda: relay.open_upstreams == 0, timeout=10)
                first = get(base, "/readyz", 10)
                tried = relay.stale_uses
                later = get(base, "/readyz", 10)
                tried_later = relay.stale_uses
            finally:
                cluster.start()
            assert first[0] == 503, first
            assert json.loads(first[1])["errors"][0]["code"] == "unavailable"
            # One broken connection, then a new one refused: the store is gone, so the
            # other broken ones are not tried one by one (0.2 s apart) before the 503.
            assert tried == 1, f"the first /readyz tried {tried} of {pooled} broken connections"
            assert later[0] == 503 and tried_later == 1, "later ones touch no connection"
            wait_until(lambda: get(base, "/readyz", 5)[0] == 200, timeout=RECOVERY_BOUND)
    finally:
        relay.close()


def test_a_connection_dropped_while_the_store_stays_up_is_not_an_outage(cluster):
    data = seed(cluster.url)
    body = add_member_body(data.people[0], data.communities[0])
    with running_server(cluster.url, "--no-projections") as base:
        warm(base)
        with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = 'test' AND pid <> pg_backend_pid()"
            ).fetchone()
        assert dropped and dropped[0] >= 2, "the server's pooled connections were dropped"
        # The first call meets a dropped connection; the store still takes new ones, so
        # it is retried on a sound connection instead of answering 503.
        assert get(base, "/readyz", 10)[0] == 200
        key = str(uuid.uuid4())
        assert post(base, ADD, body, data.token, key, 10)[0] == 200
        assert post(base, ADD, body, data.token, key, 10)[0] == 200  # a replay
