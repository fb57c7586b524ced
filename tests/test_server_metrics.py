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
            if lags and all(line.endswith(" 0.0") for line in lags) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    served = [
        line
        for line in metrics.splitlines()
        if line.startswith("pm_ops_requests_total{") and 'status="200"' in line and ADD in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in served) == 6
    assert {line.split('"')[1] for line in lags} >= {"state", "audit"}
    assert all(line.endswith(" 0.0") for line in lags), lags
