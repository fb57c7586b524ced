"""Faults mid-load on the real server: `kill -9` of an API worker and of the projections
process, and a restart of the PostgreSQL cluster. Afterwards every acknowledged call
has exactly one event and one delivery record, the projections catch up and `verify`
passes. Callers retry what was not acknowledged under the same key, as Customer.io does."""

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aggregates.person import Person
from api.bootstrap import bootstrap
from api.config import Config
from tests.conftest import add_member_body
from tests.pg_cluster import wait_until
from tests.server import ADD, descendants, pm_ops, post, running_server_process, seed

CALLS = 240
CLIENTS = 8


def child_of(serve: subprocess.Popen[bytes], what: str) -> int:
    for pid in descendants(serve.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if what in cmdline and Path(f"/proc/{pid}/stat").read_text().split()[3] == str(serve.pid):
            return pid
    raise AssertionError(f"no {what} process under serve")


def test_kill_9_and_a_database_restart_mid_load_lose_and_duplicate_nothing(cluster):
    data = seed(cluster.url, people=40, communities=6)
    calls = [
        (person, community, f"fault-{uuid.uuid4()}")
        for person in data.people
        for community in data.communities
    ][:CALLS]
    answered: dict[str, int] = {}
    progress = Counter[str]()
    lock = threading.Lock()

    def call(item: tuple[int, int, str]) -> None:
        person, community, key = item
        status = post(base, ADD, add_member_body(person, community), data.token, key, 10)[0]
        with lock:
            answered[key] = status
            progress["done"] += 1

    with running_server_process(cluster.url, "--workers", "2") as (base, serve):
        with ThreadPoolExecutor(CLIENTS) as pool:
            pending = [pool.submit(call, item) for item in calls]
            faults = [
                ("worker", lambda: os.kill(child_of(serve, "serve"), signal.SIGKILL)),
                ("projections", lambda: os.kill(child_of(serve, "projections"), signal.SIGKILL)),
                ("database", cluster.restart),
            ]
            for share, (_name, fault) in zip((0.2, 0.4, 0.6), faults, strict=True):
                wait_until(lambda s=share: progress["done"] >= CALLS * s, timeout=60)
                fault()
            for future in pending:
                future.result()
        acknowledged_first = sum(1 for status in answered.values() if status == 200)
        # The caller retries everything not acknowledged, with the same key.
        deadline = time.monotonic() + 30
        while (
            missing := [c for c in calls if answered[c[2]] != 200]
        ) and time.monotonic() < deadline:
            for item in missing:
                call(item)
            time.sleep(0.2)
        assert not missing, f"{len(missing)} calls never acknowledged"
        assert acknowledged_first >= CALLS // 2, "the load ran through the faults"
        caught_up = wait_until(lambda: lags(cluster.url) == {0}, timeout=30)

    assert_each_call_once(cluster.url, calls)
    verified = subprocess.run(
        [pm_ops(), "--database-url", cluster.url, "verify"], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    print(
        f"faults: {acknowledged_first}/{CALLS} acknowledged first time, the rest on retry; "
        f"projections caught up {caught_up:.1f} s after the load"
    )


def lags(url: str) -> set[int]:
    status = subprocess.run(
        [pm_ops(), "--database-url", url, "projections", "status", "--format", "json"],
        capture_output=True,
        text=True,
    )
    if status.returncode != 0:
        return {-1}
    return {json.loads(line)["lag"] for line in status.stdout.splitlines() if line.strip()}


def assert_each_call_once(url: str, calls: list[tuple[int, int, str]]) -> None:
    with bootstrap(Config(database_url=url), create_tables=False) as services:
        app = services.app
        events = [
            app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(1, 10**6)
        ]
    added = Counter(
        (e.originator_id, e.community_id)
        for e in events
        if type(e).__qualname__ == "Person.MemberAdded"
    )
    delivered = Counter(e.key for e in events if type(e).__qualname__ == "Delivery.Recorded")
    for person, community, key in calls:
        assert added[(Person.create_id(person), community)] == 1, (person, community)
        assert delivered[key] == 1, key
