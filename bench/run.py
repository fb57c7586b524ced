"""`make bench`: pm-ops against the CRUD anchor on PostgreSQL, measured with wrk.

    make bench      (OPS_BENCH_POSTGRES_URL, default the local test database;
                     OPS_BENCH_SECONDS per measurement, OPS_BENCH_ROUNDS, OPS_BENCH_PEOPLE)

In one run, on a fresh schema:
1. imports OPS_BENCH_PEOPLE people with `pm-ops directory import` (rows/s, the median of
   three imports on fresh schemas; peak RSS) and runs the same import again (a no-op);
2. alternates the servers: pm-ops under `pm-ops serve --workers 2`, and the anchor
   (bench/crud_anchor.py, served as handed over: bench refuses a copy that differs) on
   two servers, 2 workers and 8 threads each: granian (WSGI, blocking threads), its best
   server here, and gunicorn (gthread); each round, the anchor's better server counts.
   OPS_BENCH_ROUNDS rounds, default 6, the order reversed every round (A B C, C B A ...),
   so a slow spell of this VM lands on every side alike; the median ratio is the figure
   to quote. The servers stay up for the whole run, idle while another is measured; each
   round uses people and keys of its own. Per server: add-member with a new key every
   call, then the same 200 keys sent again (replays). wrk: 2 threads, 16 connections;
3. reads the API workers' RSS after every call of the run (6 rounds of 8 s measurements: over
   100k calls on this machine), rebuilds each projection with `pm-ops projections
   rebuild` and runs `pm-ops verify` (events/s), and profiles one request per stage
   in-process (bench/stages.py), now and at the baseline commit OPS_BENCH_BASELINE
   (default 746ae0c, the one issue 19 measured), so the report shows what moved;
3b. serves pm-ops with its projections and measures add-member with wrk twice: without
   rebuilds, then while state, audit and chain are rebuilt one after another beside their
   live tables (issue 20), a reader of those tables querying throughout both: the
   throughput kept, each rebuild's pace under that load, how long each swap held its
   tables, and how long the reader's queries took during the rebuilds;
4. on a fresh schema, serves pm-ops with its projections and the Slack feed against a local
   fake Slack (tests/fake_slack.py), calls it 50 times a second and reports how long each
   call took to appear in a post (OPS_BENCH_FEED_SECONDS, default 20).

wrk and the servers share the machine: quote ratios from one run, not absolute numbers."""

import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.server import DidNotStart, free_port, launched, pm_ops  # noqa: E402

POSTGRES = os.environ.get("OPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS = int(os.environ.get("OPS_BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("OPS_BENCH_ROUNDS", "6"))
PEOPLE = int(os.environ.get("OPS_BENCH_PEOPLE", "100000"))
WORKERS, CONNECTIONS, WRK_THREADS, REPLAY_KEYS = 2, 16, 2, 200
IMPORT_RUNS = 3
# The "before" of the stage report: the commit issue 19 measured (an empty value skips it).
BASELINE = os.environ.get("OPS_BENCH_BASELINE", "746ae0c")
STAGE_PEOPLE = 5000
FEED_RATE, FEED_SECONDS = 50, int(os.environ.get("OPS_BENCH_FEED_SECONDS", "20"))
LUA = ROOT / "bench" / "wrk" / "add_member.lua"
WRK_HINT = (
    "wrk is missing: install it from the distribution's packages "
    "(Debian/Ubuntu: apt-get install -y wrk; macOS: brew install wrk)."
)
# The anchor, byte for byte as handed over (../shared/bench/crud_anchor.py from the
# repository root, checked too when it is there): a changed anchor is another yardstick.
ANCHOR = ROOT / "bench" / "crud_anchor.py"
ANCHOR_SHA256 = "52ed73ea6fa71ec94d1737b9c065d7c4b0816048514477c6aa7623b9f4104c64"
ANCHOR_ORIGINAL = ROOT.parent / "shared" / "bench" / "crud_anchor.py"
ANCHOR_THREADS = 8
BIN = Path(sys.executable).parent
SCENARIOS = {"new": "add-member, new key", "replay": f"the same {REPLAY_KEYS} keys again"}


@dataclass
class Load:
    rate: float
    p50_ms: float
    p99_ms: float


@dataclass
class Server:
    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str]
    token: str
    community: int
    new: list[Load] = field(default_factory=list)
    replay: list[Load] = field(default_factory=list)
    calls: int = 0
    rss_mb: float = 0.0


def wrk(base: str, seconds: int, *args: object) -> Load:
    argv = ["wrk", "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s"]
    argv += ["--timeout", "10s", "-s", str(LUA), base, "--", *map(str, args)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"wrk saw errors against {base}: {result}")
    return Load(
        result["requests"] / (result["duration_us"] / 1e6),
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
    )


def post(base: str, token: str, key: str, person: int, community: int) -> None:
    body = {
        "data": {
            "type": "communityMembership",
            "attributes": {"personId": person, "communityId": community},
        }
    }
    request = urllib.request.Request(
        base + "/api/v1/ops/people/communities/add",
        json.dumps(body, separators=(",", ":")).encode(),
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-CIO-Idempotency-Key": key,
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.status


@contextmanager
def serving(server: Server) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start a server on a free port, wait until it answers, stop it afterwards."""
    port = free_port()
    argv = server.argv(port)
    # The anchor has no /healthz: any answer (its 404) means a worker is up.
    try:
        with launched(argv, port, server.env, start_seconds=60, any_answer=True) as started:
            time.sleep(1)  # let every worker finish starting
            yield started
    except DidNotStart as error:
        raise SystemExit(f"{server.name} did not start:\n{error}") from None


def measure_round(
    server: Server, base: str, process: subprocess.Popen[bytes], people: range
) -> None:
    """Warm up, new keys, then REPLAY_KEYS keys sent once and then again and again."""
    prefix = uuid.uuid4().hex[:12]
    low, high = people.start, people.stop - 1
    wrk(base, 2, "new", server.token, f"warm-{prefix}", low, high, server.community)
    server.new.append(
        wrk(base, SECONDS, "new", server.token, f"new-{prefix}", low, high, server.community)
    )
    for i in range(REPLAY_KEYS):
        post(base, server.token, f"replay-{prefix}-{i}", low + i, server.community)
    server.replay.append(
        wrk(
            base, SECONDS, "replay", server.token, f"replay-{prefix}", low, REPLAY_KEYS,
            server.community,
        )
    )  # fmt: skip
    # Every call this server process has answered so far (it serves all the rounds).
    server.calls += int((server.new[-1].rate + server.replay[-1].rate) * SECONDS)
    server.calls += int(server.new[-1].rate * 2) + REPLAY_KEYS
    server.rss_mb = worker_rss_mb(process.pid)


def worker_rss_mb(pid: int) -> float:
    """The largest resident set among the server's descendant processes (its workers)."""
    largest = 0
    for child in descendants(pid):
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                largest = max(largest, int(line.split()[1]))
    return largest / 1024


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: its children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (fields := proc_stat(int(name))):
            children.setdefault(int(fields[1]), []).append(int(name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending += children.get(child, [])
    return found


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first, then the parent, ...;
    user and system CPU ticks at 11 and 12), [] once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def run_cli(env: dict[str, str], *args: str) -> tuple[float, float, str]:
    """Run `pm-ops ARGS`; seconds taken, the process's peak RSS in MB, its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([pm_ops(), *args], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"pm-ops {' '.join(args)} failed:\n{err.read().decode()[-2000:]}")
        return elapsed, usage.ru_maxrss / 1024, out.read().decode()


def log_head(env: dict[str, str]) -> int:
    _, _, out = run_cli(env, "projections", "status", "--format", "json")
    return max(json.loads(line)["head"] for line in out.splitlines() if line.strip())


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_HINT)
    if not (BIN / "gunicorn").exists():
        raise SystemExit("gunicorn is missing: pip install -e '.[dev,bench]' (make bench does)")
    check_anchor()
    with fresh_schema() as (schema, env):
        report = bench(env, schema)
    with fresh_schema() as (_, env):
        report += "\n" + feed_lag_report(env)
    print(report)


def check_anchor() -> None:
    """The anchor served is the one handed over, unchanged."""
    served = ANCHOR.read_bytes()
    if hashlib.sha256(served).hexdigest() != ANCHOR_SHA256:
        raise SystemExit(f"{ANCHOR} is not the anchor as handed over: restore it, byte for byte")
    if ANCHOR_ORIGINAL.exists() and ANCHOR_ORIGINAL.read_bytes() != served:
        raise SystemExit(
            f"The anchor at {ANCHOR_ORIGINAL} differs from {ANCHOR}: copy it over and "
            "update ANCHOR_SHA256 in bench/run.py, then quote no ratio measured before."
        )


@contextmanager
def fresh_schema() -> Iterator[tuple[str, dict[str, str]]]:
    """A schema of its own and the environment naming it."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    env = {
        **os.environ,
        "OPS_DATABASE_URL": f"{POSTGRES}?schema={schema}",
        "OPS_RATE_LIMIT_PER_MINUTE": "100000000",
    }
    env.setdefault("OPS_SECRET_KEY", "YmVuY2gtb25seS1zZWNyZXQta2V5LWZvci1wbS1vcHM=")
    try:
        yield schema, env
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def bench(env: dict[str, str], schema: str) -> str:
    lines = [f"pm-ops bench on {machine()}", import_report(env)]
    _, _, issued = run_cli(env, "tokens", "issue", "--name", "bench", "--actor", "bench")
    token = issued.strip().splitlines()[-1]
    vacuum(schema)
    ours = Server(
        "pm-ops",
        lambda port: [
            pm_ops(), "serve", "--port", str(port), "--workers", str(WORKERS), "--no-projections",
        ],
        env, token, community=1,
    )  # fmt: skip
    anchors = anchor_servers(schema, token)
    run_rounds([ours, *anchors])
    lines += load_report(ours, anchors)
    lines += rebuild_report(env)
    lines += bluegreen_report(env, schema, token)
    lines += stage_report()
    return "\n".join(lines)


def anchor_servers(schema: str, token: str) -> list[Server]:
    """The anchor on granian and on gunicorn (2 workers, 8 threads each), sharing its
    tables in this run's schema, made before any worker starts (as its docstring asks).
    A community each, so neither finds the other's memberships already there."""
    env = {
        **os.environ,
        "ANCHOR_DSN": f"{POSTGRES}?options=-csearch_path%3D{schema}",
        "ANCHOR_TOKEN": token,
    }
    subprocess.run([sys.executable, str(ANCHOR), "--create-tables"], env=env, check=True)
    here, module = str(ANCHOR.parent), f"{ANCHOR.stem}:app"
    granian = [
        str(BIN / "granian"), "--interface", "wsgi", "--workers", str(WORKERS),
        "--blocking-threads", str(ANCHOR_THREADS), "--host", "127.0.0.1",
        "--working-dir", here, module, "--port",
    ]  # fmt: skip
    gunicorn = [
        str(BIN / "gunicorn"), "--chdir", here, "--workers", str(WORKERS),
        "--worker-class", "gthread", "--threads", str(ANCHOR_THREADS),
        "--log-level", "warning", module, "--bind",
    ]  # fmt: skip
    return [
        Server("anchor/granian", lambda port: [*granian, str(port)], env, token, community=1),
        Server(
            "anchor/gunicorn",
            lambda port: [*gunicorn, f"127.0.0.1:{port}"],
            env,
            token,
            community=2,
        ),  # fmt: skip
    ]


def run_rounds(servers: list[Server]) -> None:
    """Every server measured once a round, the order reversed every round. They all stay
    up for the whole run (idle while another is measured), so the workers' RSS is read
    after every call of the run, not after one round."""
    share = PEOPLE // ROUNDS
    with ExitStack() as stack:
        running = [(server, *stack.enter_context(serving(server))) for server in servers]
        for r in range(ROUNDS):
            people = range(1 + r * share, 1 + (r + 1) * share)
            for server, base, process in running[:: 1 if r % 2 == 0 else -1]:
                measure_round(server, base, process, people)
                print(
                    f"round {r + 1}/{ROUNDS} {server.name}: new keys {server.new[-1].rate:,.0f}"
                    f" req/s, replays {server.replay[-1].rate:,.0f} req/s",
                    file=sys.stderr,
                    flush=True,
                )


def import_report(env: dict[str, str]) -> str:
    """`pm-ops directory import` of PEOPLE people into this run's schema (the people the
    rounds call with), then into IMPORT_RUNS - 1 fresh schemas more: an import takes
    seconds, and a PostgreSQL checkpoint landing in one was seen to cost it a third, so
    the median is the figure. Then the same file again, a no-op."""
    workdir = Path(tempfile.mkdtemp(prefix="pm-ops-bench-"))
    people, communities = workdir / "people.csv", workdir / "communities.csv"
    with people.open("w") as f:
        f.write("id,email\n")
        f.writelines(f"{i},p{i}@bench.example\n" for i in range(1, PEOPLE + 1))
    communities.write_text("id,name\n1,Bench\n")

    def timed_import(into: dict[str, str]) -> tuple[float, float]:
        run_cli(into, "directory", "import", "--communities", str(communities))
        seconds, rss, _ = run_cli(into, "directory", "import", "--people", str(people))
        return seconds, rss

    runs = [timed_import(env)]
    again, _, _ = run_cli(env, "directory", "import", "--people", str(people))
    for _ in range(IMPORT_RUNS - 1):
        with fresh_schema() as (_, other):
            runs.append(timed_import(other))
    shutil.rmtree(workdir)
    rates = [PEOPLE / seconds for seconds, _ in runs]
    return (
        f"directory import, {PEOPLE:,} people: {statistics.median(rates):,.0f} rows/s, median"
        f" of {', '.join(f'{rate:,.0f}' for rate in rates)} (each on a fresh schema; peak RSS"
        f" {max(rss for _, rss in runs):.0f} MB); the same file again:"
        f" {PEOPLE / again:,.0f} rows/s (no-op)"
    )


def vacuum(schema: str) -> None:
    """Analyze what the import wrote now, not in an autovacuum during the first round."""
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            conn.execute(f'VACUUM (ANALYZE) "{schema}"."{table}"')


def load_report(ours: Server, anchors: list[Server]) -> list[str]:
    """Every round of each measurement, then the median ratio and its spread."""
    lines = [
        f"wrk, {WRK_THREADS} threads, {CONNECTIONS} connections, {SECONDS} s each, {ROUNDS}"
        " rounds, the order reversed every round: req/s (p99 latency) per server, and the"
        " ratio pm-ops / the anchor on its better server that round"
    ]
    servers = [ours, *anchors]
    for scenario, title in SCENARIOS.items():
        rounds = list(zip(*(getattr(server, scenario) for server in servers), strict=True))
        ratios = [mine.rate / max(load.rate for load in theirs) for mine, *theirs in rounds]
        lines.append(f"  {title}:")
        for r, (loads, ratio) in enumerate(zip(rounds, ratios, strict=True)):
            cells = "   ".join(
                f"{server.name} {load.rate:,.0f} ({load.p99_ms:.1f} ms)"
                for server, load in zip(servers, loads, strict=True)
            )
            lines.append(f"    round {r + 1}: {cells}   ratio {ratio:.2f}")
        lines.append(
            f"    ratio: median {statistics.median(ratios):.2f},"
            f" spread {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds"
        )
        lines.append("    latency, median of the rounds: " + latencies(servers, scenario))
    new_rate = statistics.mean(load.rate for load in ours.new)
    replay_rate = statistics.mean(load.rate for load in ours.replay)
    lines.append(f"  pm-ops replays / new calls: {replay_rate / new_rate:.2f}")
    lines.append(
        f"  API worker RSS after the run's ~{ours.calls:,} calls: {ours.rss_mb:.0f} MB ("
        + ", ".join(f"{anchor.name} {anchor.rss_mb:.0f} MB" for anchor in anchors)
        + ")"
    )
    return lines


def latencies(servers: list[Server], scenario: str) -> str:
    """Each server's p50 and p99 latency, the median over the rounds."""
    parts = []
    for server in servers:
        loads = getattr(server, scenario)
        p50 = statistics.median(load.p50_ms for load in loads)
        p99 = statistics.median(load.p99_ms for load in loads)
        parts.append(f"{server.name} p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return "; ".join(parts)


def rebuild_report(env: dict[str, str]) -> list[str]:
    """`pm-ops projections rebuild` of each database projection, then `pm-ops verify`,
    in events of the log per second, wall clock and per CPU second of pm-ops itself
    (PostgreSQL's CPU not counted; the machine is shared, so the CPU figure is the
    steadier one)."""
    import resource

    from projections.read_models import DB_PROJECTIONS

    def timed(*args: str) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds, _, _ = run_cli(env, *args)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    events = log_head(env)
    walls, cpus = [], []
    for name in DB_PROJECTIONS:
        seconds, cpu = timed("projections", "rebuild", name)
        walls.append(f"{name} {events / seconds:,.0f}")
        cpus.append(f"{name} {events / cpu:,.0f}")
    seconds, cpu = timed("verify")
    return [
        f"projection rebuild, {events:,} events: " + ", ".join(walls) + " events/s "
        f"(per pm-ops CPU second: {', '.join(cpus)})",
        f"verify, {events:,} events: {events / seconds:,.0f} events/s "
        f"(per pm-ops CPU second: {events / cpu:,.0f})",
    ]


BLUE_GREEN = ("state", "audit", "chain")
SWAP_LOG = re.compile(r"projection (\w+): rebuilt tables swapped in .* locked for ([0-9.]+) ms")


@dataclass
class Rebuilt:
    name: str
    seconds: float
    events: int
    swap_ms: float | None


def bluegreen_report(env: dict[str, str], schema: str, token: str) -> list[str]:
    """Issue 20: add-member's throughput with pm-ops serve's own projections following,
    alone and then while state, audit and chain are rebuilt beside their live tables
    one after another (the runners keep the live tables current and stand by for each
    swap); each rebuild's pace under that load, how long each swap held its tables (from
    its log), and how long reads of those tables (a person's audit entries, a person's
    state) took while the rebuilds ran."""
    server = Server(
        "pm-ops",
        lambda port: [pm_ops(), "serve", "--port", str(port), "--workers", str(WORKERS)],
        env, token, community=1,
    )  # fmt: skip
    with serving(server) as (base, _process):
        prefix = uuid.uuid4().hex[:12]
        wrk(base, 2, "new", token, f"bg-warm-{prefix}", 1, PEOPLE, 1)
        # The reader runs in both measurements: the ratio is the rebuilds' own cost.
        with reading(schema):
            alone = wrk(base, SECONDS, "new", token, f"bg-alone-{prefix}", 1, PEOPLE, 1)
        with rebuilding(env) as rebuilt, reading(schema) as reads:
            time.sleep(2)  # the first rebuild under way
            during = wrk(base, SECONDS, "new", token, f"bg-during-{prefix}", 1, PEOPLE, 1)
    swaps = [r.swap_ms for r in rebuilt if r.swap_ms is not None]
    paces = ", ".join(f"{r.name} {r.events / r.seconds:,.0f}" for r in rebuilt)
    reads.sort()
    return [
        f"blue/green rebuilds under load (pm-ops serve with its projections, wrk as above, "
        f"{SECONDS} s each, a reader of the rebuilt tables in both): add-member "
        f"{alone.rate:,.0f} req/s without rebuilds, {during.rate:,.0f} "
        f"while rebuilding ({during.rate / alone.rate:.2f} of it; p99 {alone.p99_ms:.1f} ms"
        f" -> {during.p99_ms:.1f} ms)",
        f"  rebuilds meanwhile, events/s (whole log each): {paces}",
        f"  swaps held their tables for at most {max(swaps, default=0):.1f} ms"
        f" ({len(swaps)} swaps: {', '.join(f'{ms:.1f}' for ms in swaps)} ms)",
        f"  reads of those tables meanwhile: {len(reads):,}, p50 "
        f"{reads[len(reads) // 2]:.1f} ms, p99 {reads[len(reads) * 99 // 100]:.1f} ms, "
        f"longest {reads[-1]:.1f} ms",
    ]


@contextmanager
def rebuilding(env: dict[str, str]) -> Iterator[list[Rebuilt]]:
    """`pm-ops projections rebuild` of BLUE_GREEN, one after another, round and round,
    until the block ends (the one under way is let finish: nothing is left half-built)."""
    done: list[Rebuilt] = []
    failed: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for name in BLUE_GREEN:
                started = time.perf_counter()
                result = subprocess.run(
                    [pm_ops(), "projections", "rebuild", name],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0:
                    failed.append(f"pm-ops projections rebuild {name} failed:\n{result.stderr}")
                    return
                events = int(result.stdout.rsplit("up to position ", 1)[1].split(".")[0])
                swap = SWAP_LOG.search(result.stderr)
                swap_ms = float(swap.group(2)) if swap else None
                done.append(Rebuilt(name, time.perf_counter() - started, events, swap_ms))
                if stop.is_set():
                    return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join()
    if failed:
        raise SystemExit(failed[0])


@contextmanager
def reading(schema: str) -> Iterator[list[float]]:
    """A reader of the rebuilt tables, one query after another, each timed (ms)."""
    durations: list[float] = []
    stop = threading.Event()
    queries = (
        f'SELECT count(*) FROM "{schema}".ops_audit WHERE person_id = %s',
        f'SELECT email FROM "{schema}".ops_state_people WHERE person_id = %s',
    )

    def loop() -> None:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute(random.choice(queries), (random.randint(1, PEOPLE),)).fetchall()
                durations.append((time.perf_counter() - started) * 1000)
                time.sleep(0.001)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield durations
    finally:
        stop.set()
        thread.join()


def stage_report() -> list[str]:
    """The CPU of one call per stage (bench/stages.py), for this code and for the
    baseline commit OPS_BENCH_BASELINE (default the commit issue 19 measured; empty
    skips it), each on a fresh schema with STAGE_PEOPLE people imported by that code."""
    measured = {"now": stages_of(ROOT)}
    if BASELINE:
        with baseline_tree(BASELINE) as tree:
            if tree is None:
                return [f"(the baseline {BASELINE} is not in this repository's history)"]
            measured["before"] = stages_of(tree)
    lines = []
    for scenario, title in (("new", "add-member, new key"), ("replay", "replay")):
        now = measured["now"][scenario]
        before = measured.get("before", {}).get(scenario)
        head = (
            f"  {'stage':32} {'before':>8} {'now':>8}" if before else f"  {'stage':32} {'now':>8}"
        )
        lines += [f"CPU of one call per stage, {title} (µs, in-process under cProfile,"
                  f" sequential; {BASELINE or 'no baseline'} before):", head]  # fmt: skip
        for stage in sorted(now, key=lambda name: (name == "total", -now[name])):
            cells = f"{before.get(stage, 0):8,.0f} " if before else ""
            lines.append(f"  {stage:32} {cells}{now[stage]:8,.0f}")
    return lines


def stages_of(tree: Path) -> dict[str, dict[str, float]]:
    """bench/stages.py's figures for the pm-ops code in `tree`, on a fresh schema."""
    with fresh_schema() as (_, env):
        env = {**env, "PYTHONPATH": str(tree), "OPS_BENCH_PEOPLE": str(STAGE_PEOPLE)}
        workdir = Path(tempfile.mkdtemp(prefix="pm-ops-stages-"))
        people, communities = workdir / "people.csv", workdir / "communities.csv"
        people.write_text(
            "id,email\n" + "".join(f"{i},p{i}@bench.example\n" for i in range(1, STAGE_PEOPLE + 1))
        )
        communities.write_text("id,name\n1,Bench\n")
        run_cli(env, "directory", "import", "--communities", str(communities))
        run_cli(env, "directory", "import", "--people", str(people))
        shutil.rmtree(workdir)
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "stages.py"), "--code", str(tree), "--json"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    figures: dict[str, dict[str, float]] = json.loads(out.strip().splitlines()[-1])
    return figures


@contextmanager
def baseline_tree(revision: str) -> Iterator[Path | None]:
    """The code of `revision` in a temporary directory (None if git does not know it)."""
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{revision}^{{commit}}"], capture_output=True
    )
    if known.returncode != 0:
        yield None
        return
    tree = Path(tempfile.mkdtemp(prefix="pm-ops-baseline-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        yield tree
    finally:
        shutil.rmtree(tree)


def feed_lag_report(env: dict[str, str]) -> str:
    """Seconds from a call's answer to the Slack post that shows it, with `pm-ops serve`
    running its projections and the feed against a local fake Slack, at FEED_RATE calls/s."""
    from tests.fake_slack import FakeSlack

    workdir = Path(tempfile.mkdtemp(prefix="pm-ops-feed-"))
    people, communities = workdir / "people.csv", workdir / "communities.csv"
    people.write_text("id,email\n" + "".join(f"{i},f{i}@bench.example\n" for i in range(1, 1001)))
    communities.write_text("id,name\n1,Feed\n")
    run_cli(env, "directory", "import", "--people", str(people), "--communities", str(communities))
    _, _, issued = run_cli(env, "tokens", "issue", "--name", "feed", "--actor", "bench")
    token = issued.strip().splitlines()[-1]
    fake = FakeSlack().start()
    feed_env = {**env, "SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_API_URL": fake.url}
    argv = [pm_ops(), "serve", "--workers", str(WORKERS)]
    server = Server("pm-ops", lambda port: [*argv, "--port", str(port)], feed_env, token, 1)
    sent: dict[str, float] = {}
    prefix = uuid.uuid4().hex[:8]
    try:
        with serving(server) as (base, _):
            started = time.monotonic()
            for i in range(FEED_RATE * FEED_SECONDS):
                time.sleep(max(0.0, started + i / FEED_RATE - time.monotonic()))
                key = f"feed-{prefix}-{i}"
                post(base, token, key, 1 + i % 1000, 1)
                sent[key] = time.monotonic()
            pace = len(sent) / (time.monotonic() - started)
            deadline = time.monotonic() + 60
            while len(posted_at(fake, sent)) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.5)
        shown = posted_at(fake, sent)
    finally:
        fake.stop()
    lags = sorted(shown[key] - sent[key] for key in shown)
    if not lags:
        return "Slack feed: nothing was posted within a minute"
    return (
        f"Slack feed at {pace:.0f} calls/s for {FEED_SECONDS} s: lag p50 "
        f"{lags[len(lags) // 2]:.1f} s, max {lags[-1]:.1f} s; {len(shown)} of {len(sent)} calls "
        f"shown in {len(fake.posts)} posts"
    )


def posted_at(fake: Any, sent: dict[str, float]) -> dict[str, float]:
    """When each sent key first appeared in a Slack post."""
    shown: dict[str, float] = {}
    with fake.lock:
        for item in fake.posts:
            for key in re.findall(r"key `([^`]+)`", item.body):
                if key in sent:
                    shown.setdefault(key, item.at)
    return shown


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, {model}, load average {load:.1f} at start"


if __name__ == "__main__":
    main()
