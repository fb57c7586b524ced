"""What an operator sees from a real `pm-ops serve`: metrics from every process,
and projections running beside the API."""

import json
import time
import urllib.request
import uuid

from tests.conftest import add_member_body
from tests.server import running_server

ADD = "/api/v1/ops/people/communities/add"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_metrics_add_up_every_worker_and_show_projection_lag(config, directory):
    with running_server(config.database_url, "--workers", "2") as base:
        body = json.dumps(add_member_body(directory.person_id, directory.community_id)).encode()
        for _ in range(6):
            request = urllib.request.Request(
                base + ADD, body, directory.headers(str(uuid.uuid4())), method="POST"
            )
            urllib.request.urlopen(request, timeout=10).read()
        deadline = time.monotonic() + 20
        while True:
            metrics = get(base + "/metrics")
            lags = [
                line for line in metrics.splitlines() if line.startswith("pm_ops_projection_lag{")
            ]
            names = {line.split('"')[1] for line in lags}
            settled = names >= {"state", "audit"} and all(line.endswith(" 0.0") for line in lags)
            # Each worker hands its counts over within a second (api/metrics.py).
            if (settled and served(metrics) == 6) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert served(metrics) == 6
    timed = [line for line in metrics.splitlines() if line.startswith("pm_ops_command_seconds")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in timed if "_count{" in line) == 6
    assert sum(float(line.rsplit(" ", 1)[1]) for line in timed if "_sum{" in line) > 0
    infinite = [line for line in timed if 'le="+Inf"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in infinite) == 6
    assert {line.split('"')[1] for line in lags} >= {"state", "audit"}
    assert all(line.endswith(" 0.0") for line in lags), lags


def served(metrics: str) -> float:
    """add-member calls answered 200, summed over the workers."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("pm_ops_requests_total{") and 'status="200"' in line and ADD in line
    )


def projections_child(server_pid: int) -> int | None:
    import subprocess

    found = subprocess.run(
        ["pgrep", "-P", str(server_pid), "-f", "projections run"], capture_output=True, text=True
    ).stdout.split()
    return int(found[0]) if found else None


def test_a_projections_process_that_dies_is_restarted(config, directory):
    import os
    import signal

    from tests.server import running_server_process

    with running_server_process(config.database_url, "--workers", "1") as (base, server):
        deadline = time.monotonic() + 20
        while (first := projections_child(server.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        body = json.dumps(add_member_body(directory.person_id, directory.community_id)).encode()
        request = urllib.request.Request(
            base + ADD, body, directory.headers(str(uuid.uuid4())), method="POST"
        )
        assert urllib.request.urlopen(request, timeout=10).status == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            second = projections_child(server.pid)
            lags = [
                line
                for line in get(base + "/metrics").splitlines()
                if line.startswith('pm_ops_projection_lag{projection="state"}')
            ]
            if second not in (None, first) and lags == [
                'pm_ops_projection_lag{projection="state"} 0.0'
            ]:
                break
            time.sleep(0.5)
        assert second not in (None, first)
        assert lags == ['pm_ops_projection_lag{projection="state"} 0.0']
