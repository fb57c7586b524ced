"""Add-member throughput: pm-ops (event log, group commit) against a thin CRUD
version of itself, both on PostgreSQL behind gunicorn gthread with the same workers.

    make bench        (OPS_BENCH_POSTGRES_URL, default the local test database)

Prints requests/second for each and the ratio. One run on a noisy 2-core machine
(the load generator shares it): quote ratios from the same run, not absolute numbers."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.crud_baseline import SCHEMA
from tests.server import free_port, pm_ops

POSTGRES = os.environ.get("OPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
WORKERS, THREADS, CLIENTS, REQUESTS = "2", "16", 32, 3000
PEOPLE = 2000


def load(base: str, token: str, community: int) -> float:
    """Requests per second for REQUESTS add-member calls from CLIENTS threads."""

    def call(i: int) -> int:
        body = {
            "data": {
                "type": "communityMembership",
                "attributes": {"personId": 1 + i % PEOPLE, "communityId": community},
            }
        }
        request = urllib.request.Request(
            base + "/api/v1/ops/people/communities/add",
            json.dumps(body).encode(),
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "X-CIO-Idempotency-Key": str(uuid.uuid4()),
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(call, range(200)))  # warm up
        started = time.perf_counter()
        statuses = list(pool.map(call, range(200, 200 + REQUESTS)))
        elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, set(statuses)
    return REQUESTS / elapsed


def measure(
    argv: Callable[[int], list[str]], env: dict[str, str], token: str, community: int
) -> float:
    """Start a server on a free port, wait for it, load it, stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        argv(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except urllib.error.HTTPError:
                time.sleep(2)  # the baseline has no /healthz: a 404 means a worker is up
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"{argv(port)[0]} died on start") from None
                time.sleep(0.1)
        return load(base, token, community)
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(SCHEMA)  # the baseline's tables, made before its workers fork
    env = {
        **os.environ,
        "OPS_DATABASE_URL": f"{POSTGRES}?schema={schema}",
        "OPS_RATE_LIMIT_PER_MINUTE": "10000000",
    }
    try:
        workdir = Path(tempfile.mkdtemp(prefix="pm-ops-bench-"))
        people, communities = workdir / "people.csv", workdir / "communities.csv"
        people.write_text(
            "id,email\n" + "".join(f"{i},p{i}@bench.example\n" for i in range(1, PEOPLE + 1))
        )
        communities.write_text("id,name\n1,Bench\n2,Bench two\n")
        run = {"env": env, "check": True, "capture_output": True, "text": True}
        subprocess.run(
            [
                pm_ops(),
                "directory",
                "import",
                "--people",
                str(people),
                "--communities",
                str(communities),
            ],
            **run,
        )
        issued = subprocess.run(
            [pm_ops(), "tokens", "issue", "--name", "bench", "--actor", "bench"], **run
        )
        token = issued.stdout.strip().splitlines()[-1]

        pm_ops_rate = measure(
            lambda port: [
                pm_ops(),
                "serve",
                "--port",
                str(port),
                "--workers",
                WORKERS,
                "--threads",
                THREADS,
                "--no-projections",
            ],
            env,
            token,
            community=1,
        )
        crud_env = {
            **os.environ,
            "CRUD_DATABASE_URL": f"{POSTGRES}?options=-csearch_path%3D{schema}",
            "CRUD_TOKEN_HASH": hashlib.sha256(token.encode()).hexdigest(),
        }
        crud_rate = measure(
            lambda port: [
                sys.executable,
                "-m",
                "gunicorn",
                "--chdir",
                str(Path(__file__).parent),
                "-w",
                WORKERS,
                "-k",
                "gthread",
                "--threads",
                THREADS,
                "-b",
                f"127.0.0.1:{port}",
                "crud_baseline:create_app()",
            ],
            crud_env,
            token,
            community=2,
        )
        print(f"  pm-ops: {pm_ops_rate:8.0f} add-member requests/s")
        print(f"    crud: {crud_rate:8.0f} add-member requests/s")
        print(f"   ratio: {pm_ops_rate / crud_rate:.2f} (pm-ops / crud)")
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
