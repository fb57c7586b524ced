"""`make bench`, signed checkpoints (issue 18): how the checkpoint tree keeps up and what
a proof and `verify` against the published checkpoints cost, on PostgreSQL.

    .venv/bin/python bench/checkpoints.py      (make bench runs it after bench/run.py)

1. A log of about OPS_BENCH_CHECKPOINT_EVENTS events (default 1,000,000: a third as many
   people imported, three events each), then `pm-ops projections run --once --only
   checkpoints`: the tree of the whole log built and the first checkpoint signed (an old
   store's upgrade is exactly this), in seconds and events/s, with peak RSS.
2. A proof on that log: `inclusion_document` in-process (the CLI's work without the
   process start), the median and the worst of 50 random positions, in ms.
3. `pm-ops verify` with the witness directory configured (every note checked, the tree
   rebuilt from the events) against `pm-ops verify` without it, in events/s.
4. Lag under load: `pm-ops serve` with its projections and checkpoints every second, and wrk
   calling with new keys at OPS_BENCH_CHECKPOINT_RATE a second (default 1,000; each
   wrk thread sends on a schedule) for OPS_BENCH_CHECKPOINT_SECONDS (default 20), once the
   tree has caught up with the import; every 0.1 s the
   log's head and the tree's position are sampled, and the lag is how long ago the log
   first held an event beyond the position the tree has reached (0 at the head).
5. The API's throughput with checkpoints every second and without: `pm-ops serve` with
   its projections, add-member with new keys as bench/run.py measures it,
   OPS_BENCH_SECONDS each, in OPS_BENCH_CHECKPOINT_PAIRS pairs (default 6; on off, off on,
   ...); each pair's ratio, and their median; and, for scale, the ratio of a second "off"
   measured in each pair to the first (what this machine reads for no change).
6. What the tree costs a saturated machine in CPU, which this VM's slow and fast spells
   do not move as they move req/s: the tree and its directory witness in a process of
   their own (`pm-ops projections run --only checkpoints --only witness-directory`,
   a checkpoint every second), beside `pm-ops serve` with its other projections, saturated
   as in 5, OPS_BENCH_CHECKPOINT_SHARES times (default 5): that process's CPU and its
   PostgreSQL backends' (told apart by their application_name) as a share of all the CPU
   spent meanwhile (serve's processes, the tree's, PostgreSQL's; wrk aside), and per call.
"""

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.run import (  # noqa: E402
    POSTGRES,
    SECONDS,
    descendants,
    fresh_schema,
    proc_stat,
    run_cli,
    wrk,
)
from tests.server import free_port, launched, pm_ops  # noqa: E402

EVENTS = int(os.environ.get("OPS_BENCH_CHECKPOINT_EVENTS", "1000000"))
LOAD_SECONDS = int(os.environ.get("OPS_BENCH_CHECKPOINT_SECONDS", "20"))
LOAD_RATE = int(os.environ.get("OPS_BENCH_CHECKPOINT_RATE", "1000"))
PACE_THREADS, PACE_CONNECTIONS = 2, 32
PACED = ROOT / "bench" / "wrk" / "paced_add_member.lua"
PROOFS = 50
THROUGHPUT_PAIRS = int(os.environ.get("OPS_BENCH_CHECKPOINT_PAIRS", "6"))
SHARE_RUNS = int(os.environ.get("OPS_BENCH_CHECKPOINT_SHARES", "5"))
TREE_APP_NAME = "pm-ops-bench-tree"
TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.1
FOLLOWING = ("state", "audit", "chain", "activity")  # serve's read models


def signing_env(env: dict[str, str], workdir: Path) -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = workdir / "checkpoint-key.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    witness = workdir / "witness"
    witness.mkdir()
    return {**env, "OPS_CHECKPOINT_KEY": str(key), "OPS_CHECKPOINT_DIR": str(witness)}


def import_people(env: dict[str, str], workdir: Path, people: int) -> None:
    path, communities = workdir / "people.csv", workdir / "communities.csv"
    with path.open("w") as out:
        out.write("id,email\n")
        for person in range(1, people + 1):
            out.write(f"{person},p{person}@example.com\n")
    communities.write_text("id,name\n1,Bench\n")
    run_cli(env, "directory", "import", "--people", str(path), "--communities", str(communities))


def tree_report(env: dict[str, str]) -> list[str]:
    _, _, status = run_cli(env, "projections", "status", "--format", "json")
    head = max(int(line.split('"head":')[1].split(",")[0]) for line in status.splitlines())
    seconds, rss, _ = run_cli(env, "projections", "run", "--once", "--only", "checkpoints")
    return [
        f"checkpoint tree of {head:,} events built and signed: {seconds:.1f} s "
        f"({head / seconds:,.0f} events/s), peak RSS {rss:.0f} MB (target < 30 s)"
    ]


def proof_report(env: dict[str, str]) -> list[str]:
    os.environ.update(env)
    from api.bootstrap import bootstrap
    from api.config import Config
    from projections.proofs import inclusion_document

    timings = []
    with bootstrap(Config.from_env()) as services:
        latest = services.read_models.tree.latest()
        assert latest is not None, "no checkpoint was signed"
        for _ in range(PROOFS):
            position = random.randint(1, latest.position)
            started = time.perf_counter()
            inclusion_document(services.app, services.read_models.tree, position)
            timings.append((time.perf_counter() - started) * 1000)
    return [
        f"inclusion proof on {latest.size:,} events: median {statistics.median(timings):.1f} ms, "
        f"worst {max(timings):.1f} ms over {PROOFS} positions (target < 50 ms)"
    ]


def verify_report(env: dict[str, str]) -> list[str]:
    _, _, status = run_cli(env, "projections", "status", "--format", "json")
    head = max(int(line.split('"head":')[1].split(",")[0]) for line in status.splitlines())
    plain = {k: v for k, v in env.items() if not k.startswith("OPS_CHECKPOINT_DIR")}
    without, _, _ = run_cli(plain, "verify")
    with_them, _, _ = run_cli(env, "verify")
    return [
        f"verify, {head:,} events: {head / without:,.0f} events/s; with the published "
        f"checkpoints checked too: {head / with_them:,.0f} events/s (target >= 30,000)"
    ]


def paced(base: str, seconds: int, token: str, rate: int) -> float:
    """New-key calls at `rate` a second (wrk's PACE_THREADS threads each sending on a
    schedule, over PACE_CONNECTIONS connections); the rate reached."""
    interval = PACE_THREADS * 1000 / rate
    argv = ["wrk", "-t", str(PACE_THREADS), "-c", str(PACE_CONNECTIONS), "-d", f"{seconds}s"]
    argv += ["--timeout", "10s", "-s", str(PACED), base, "--", token]
    argv += [f"cp-{uuid.uuid4().hex[:8]}", 1, 30000, 1, interval]
    out = subprocess.run(list(map(str, argv)), check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"wrk saw errors against {base}: {result}")
    return result["requests"] / (result["duration_us"] / 1e6)


def caught_up(
    env: dict[str, str], names: tuple[str, ...] = ("checkpoints",), within: float = 120
) -> None:
    """Wait until these projections (the checkpoint tree) have reached the log's head."""
    os.environ.update(env)
    from api.bootstrap import bootstrap
    from api.config import Config

    with bootstrap(Config.from_env(), create_tables=False) as services:
        views, recorder = services.read_models.views, services.app.recorder
        deadline = time.monotonic() + within
        while min(map(views.position, names)) < (recorder.max_notification_id() or 0):
            if time.monotonic() > deadline:
                raise SystemExit(f"{', '.join(names)} did not catch up within {within:.0f} s")
            time.sleep(0.25)


def lag_report(env: dict[str, str]) -> list[str]:
    _, _, issued = run_cli(env, "tokens", "issue", "--name", "bench-cp", "--actor", "bench")
    token = issued.strip().splitlines()[-1]
    serving = every_second(env)
    port = free_port()
    argv = [pm_ops(), "serve", "--port", str(port), "--workers", "2"]
    samples: list[tuple[float, int, int]] = []  # (time, head, tree position)
    stop = threading.Event()
    os.environ.update(env)
    from api.bootstrap import bootstrap
    from api.config import Config

    def sample() -> None:
        with bootstrap(Config.from_env(), create_tables=False) as services:
            views, recorder = services.read_models.views, services.app.recorder
            while not stop.wait(SAMPLE_SECONDS):
                head = recorder.max_notification_id() or 0
                samples.append((time.monotonic(), head, views.position("checkpoints")))

    with launched(argv, port, serving, start_seconds=60) as (base, _process):
        caught_up(env)  # the projections child builds the tree of the import first
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        rate = paced(base, LOAD_SECONDS, token, LOAD_RATE)
        time.sleep(3)
        stop.set()
        watcher.join()
    # The lag at a sample: how long ago the log first held an event the tree has not
    # reached yet (0 when it holds none: the tree is at the head).
    lags = []
    for at, _head, position in samples:
        ahead = next((t for t, head, _ in samples if head > position and t <= at), at)
        lags.append(at - ahead)
    return [
        f"checkpoint tree lag at {rate:,.0f} calls/s for {LOAD_SECONDS} s (serve, 2 workers, "
        f"its projections beside): median {statistics.median(lags):.2f} s, max {max(lags):.2f} s, "
        f"sampled every {SAMPLE_SECONDS} s (target < 2 s at {LOAD_RATE:,} calls/s)"
    ]


def throughput_report(env: dict[str, str]) -> list[str]:
    """add-member's req/s under serve with its projections, checkpoints on and off, in
    THROUGHPUT_PAIRS pairs (on off, off on, ...: neither side always runs first); each
    pair's ratio, their median and spread. Each pair also measures "off" a second time:
    the ratio of the two "off"s is what this machine reads for no change at all."""
    _, _, issued = run_cli(
        env, "tokens", "issue", "--name", f"bench-tp-{uuid.uuid4().hex[:6]}", "--actor", "bench"
    )
    token = issued.strip().splitlines()[-1]
    plain, signing = unsigned(env), every_second(env)
    ratios, same, rates = [], [], {"on": [], "off": []}
    for pair in range(THROUGHPUT_PAIRS):
        measured: dict[str, float] = {}
        for mode in ("on", "off", "off again") if pair % 2 == 0 else ("off", "off again", "on"):
            measured[mode] = serve_rate(env, signing if mode == "on" else plain, token)
        rates["on"].append(measured["on"])
        rates["off"].append(measured["off"])
        ratios.append(measured["on"] / measured["off"])
        same.append(measured["off again"] / measured["off"])
    return [
        f"API with its projections, new keys: checkpoints every second vs none, "
        f"{statistics.median(ratios):.2f} of its pace (median of {len(ratios)} pairs: "
        f"{_listed(ratios)}; {statistics.median(rates['on']):,.0f} vs "
        f"{statistics.median(rates['off']):,.0f} req/s, {SECONDS} s each); none vs none "
        f"in the same pairs, for scale: {statistics.median(same):.2f} ({_listed(same)})"
    ]


def _listed(ratios: list[float]) -> str:
    return ", ".join(f"{ratio:.2f}" for ratio in ratios)


def serve_rate(env: dict[str, str], serving: dict[str, str], token: str) -> float:
    """New-key calls a second against `pm-ops serve` as `served` runs it."""
    with served(env, serving, token, tree="OPS_CHECKPOINT_KEY" in serving) as (_, saturate):
        return float(saturate().rate)


@contextmanager
def served(
    env: dict[str, str], serving: dict[str, str], token: str, *, tree: bool
) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], Any]]]:
    """`pm-ops serve` (2 workers, its projections beside) once they have caught up with
    the log (the checkpoint tree too, when `tree`), warmed with new-key calls: the server
    process, and a call that saturates it with new keys for SECONDS as bench/run.py does
    and returns wrk's load."""
    port = free_port()
    argv = [pm_ops(), "serve", "--port", str(port), "--workers", "2"]
    with launched(argv, port, serving, start_seconds=60) as (base, process):
        caught_up(env, FOLLOWING + (("checkpoints",) if tree else ()))
        prefix = f"tp-{uuid.uuid4().hex[:8]}"
        wrk(base, 2, "new", token, f"{prefix}-warm", 1, 30000, 1)
        yield process, lambda: wrk(base, SECONDS, "new", token, prefix, 1, 30000, 1)


def every_second(env: dict[str, str]) -> dict[str, str]:
    """`env` signing a checkpoint every second (the default is a minute)."""
    return {**env, "OPS_CHECKPOINT_INTERVAL": "1"}


def unsigned(env: dict[str, str]) -> dict[str, str]:
    """`env` without checkpoints."""
    return {k: v for k, v in env.items() if not k.startswith("OPS_CHECKPOINT_")}


def cpu_share_report(env: dict[str, str]) -> list[str]:
    """The tree's process and its PostgreSQL backends' share of the CPU a saturated
    machine spends, SHARE_RUNS times; their median and spread, and µs per call."""
    _, _, issued = run_cli(env, "tokens", "issue", "--name", "bench-share", "--actor", "bench")
    token = issued.strip().splitlines()[-1]
    shares, per_call = [], []
    for _ in range(SHARE_RUNS):
        tree_cpu, all_cpu, calls = share_run(env, token)
        shares.append(tree_cpu / all_cpu)
        per_call.append(tree_cpu / calls * 1e6)
    return [
        f"CPU of the checkpoint tree and its witness (a checkpoint every second) beside a "
        f"saturated API with its projections: {statistics.median(shares):.1%} of all the "
        f"CPU spent (median of {len(shares)}: {', '.join(f'{s:.1%}' for s in shares)}), "
        f"{statistics.median(per_call):.0f} µs a call, PostgreSQL's part included"
    ]


def share_run(env: dict[str, str], token: str) -> tuple[float, float, float]:
    """(CPU seconds of the tree's process and backends, of everything, calls answered)
    over one saturated wrk run."""
    tree_env = {**every_second(env), "PGAPPNAME": TREE_APP_NAME}
    argv = [pm_ops(), "projections", "run", "--only", "checkpoints", "--only", "witness-directory"]
    tree = subprocess.Popen(
        argv, env=tree_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        caught_up(env)  # before serve starts: the two would create their tables at once
        with served(env, unsigned(env), token, tree=True) as (process, saturate):
            ours = [process.pid, *descendants(process.pid), tree.pid]
            backends = tree_backends()
            before = {pid: cpu_seconds(pid) for pid in [*ours, *postgres_pids()]}
            load = saturate()
            spent = {pid: max(0.0, cpu_seconds(pid) - cpu) for pid, cpu in before.items()}
    finally:
        tree.terminate()
        tree.wait(30)
    tree_cpu = spent[tree.pid] + sum(spent.get(pid, 0.0) for pid in backends)
    return tree_cpu, sum(spent.values()), load.rate * SECONDS


def tree_backends() -> list[int]:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [TREE_APP_NAME]
        ).fetchall()
    return [pid for (pid,) in rows]


def postgres_pids() -> list[int]:
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return [pid for pid in pids if _comm(pid) in ("postgres", "postmaster")]


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, all its threads, so far (0 once it is gone)."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def main() -> None:
    lines = ["signed checkpoints"]
    with fresh_schema() as (_schema, env), tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = signing_env(env, workdir)
        import_people(env, workdir, max(1, EVENTS // 3))
        run_cli(env, "projections", "run", "--once", "--only", "state", "--only", "audit",
                "--only", "chain", "--only", "activity")  # fmt: skip
        lines += tree_report(env)
        lines += proof_report(env)
        lines += verify_report(env)
    with fresh_schema() as (_, env), tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = signing_env(env, workdir)
        import_people(env, workdir, 30000)
        lines += lag_report(env)
        lines += throughput_report(env)
        lines += cpu_share_report(env)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
