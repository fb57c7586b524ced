"""The real server while its PostgreSQL is down: quick 503s, a quick /readyz, a quick
recovery — and a restart mid-load loses and duplicates nothing."""

import json
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import add_member_body
from tests.pg_cluster import wait_until
from tests.server import ADD, descendants, get, post, running_server_process, seed

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
