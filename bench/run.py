"""Add-member throughput: pm-ops (event log, group commit) against a thin CRUD
version of itself, both on PostgreSQL behind gunicorn gthread with the same workers.

    make bench        (OPS_BENCH_POSTGRES_URL, default the local test database)

Prints requests/second for each and the ratio. One run on a noisy 2-core machine:
quote ratios from the same run, not absolute numbers."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.crud_baseline import SCHEMA
from tests.server import free_port, pm_ops

POSTGRES = os.environ.get("OPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
WORKERS, THREADS, CLIENTS, REQUESTS = "2", "16", 32, 3000
PEOPLE = 2000


def wait_up(base: str, process: subprocess.Popen) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return
        except urllib.error.HTTPError:
            time.sleep(2)  # the baseline has no /healthz: a 404 means a worker is up
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit("server died") from None
            time.sleep(0.1)


def load(base: str, token: str, community: int) -> float:
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


def main() -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{POSTGRES}?schema={schema}"
    env = {**os.environ, "OPS_DATABASE_URL": url, "OPS_RATE_LIMIT_PER_MINUTE": "10000000"}
    try:
        workdir = Path(tempfile.mkdtemp(prefix="pm-ops-bench-"))
        people = workdir / "people.csv"
        people.write_text(
            "id,email\n" + "".join(f"{i},p{i}@bench.example\n" for i in range(1, PEOPLE + 1))
        )
        communities = workdir / "communities.csv"
        communities.write_text("id,name\n1,Bench\n2,Bench two\n")
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
            env=env,
            check=True,
            capture_output=True,
        )
        token = (
            subprocess.run(
                [pm_ops(), "tokens", "issue", "--name", "bench", "--actor", "bench"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        results = {}
        port = free_port()
        server = subprocess.Popen(
            [
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
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_up(f"http://127.0.0.1:{port}", server)
            results["pm-ops"] = load(f"http://127.0.0.1:{port}", token, 1)
        finally:
            server.terminate()
            server.wait()
        with psycopg.connect(
            f"{POSTGRES}?options=-csearch_path%3D{schema}", autocommit=True
        ) as conn:
            conn.execute(SCHEMA)
        port = free_port()
        crud_env = {
            **os.environ,
            "CRUD_DATABASE_URL": POSTGRES + f"?options=-csearch_path%3D{schema}",
            "CRUD_TOKEN_HASH": hashlib.sha256(token.encode()).hexdigest(),
        }
        baseline = subprocess.Popen(
            [
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
            env=crud_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_up(f"http://127.0.0.1:{port}", baseline)
            results["crud"] = load(f"http://127.0.0.1:{port}", token, 2)
        finally:
            baseline.terminate()
            baseline.wait()
        for name, rate in results.items():
            print(f"{name:>8}: {rate:8.0f} add-member requests/s")
        print(f"   ratio: {results['pm-ops'] / results['crud']:.2f} (pm-ops / crud)")
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
