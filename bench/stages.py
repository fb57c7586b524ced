"""Where the CPU of one add-member request goes, per stage (run by bench/run.py).

The real app (create_app on the store in OPS_DATABASE_URL, PostgreSQL in the bench)
is called in-process through falcon's TestClient, one request at a time, under
cProfile with a per-thread CPU clock: the request thread, the group committer and the
rate-limit thread each get a profile, so waiting costs nothing and work done for a
request in another thread is still counted. The server's own HTTP parsing is not in
this picture (wrk's figures include it). One request at a time means every save
carries one command; under load a save is shared by the batch, so `save` shrinks.
Profiling inflates Python-heavy stages: read the shares, not the microseconds.
OPS_BENCH_PROFILE_OUT=FILE keeps the merged profile for a closer look.

    stages.py [--code DIR] [--json]

--code runs the pm-ops code in DIR (bench/run.py passes a checkout of the baseline
commit, for the "before" column); --json prints the stages as JSON for bench/run.py."""

import argparse
import cProfile
import json
import os
import pstats
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from falcon import testing

ROOT = Path(__file__).resolve().parent.parent

CALLS = int(os.environ.get("OPS_BENCH_STAGE_CALLS", "2000"))
PEOPLE = int(os.environ.get("OPS_BENCH_PEOPLE", "100000"))

# (stage, [(file suffix, function)]) — cumulative time of these functions, summed.
STAGES = [
    ("admission (token, checks, key)", [("api/gate.py", "admit")]),
    ("rate limit", [("api/rate_limit.py", "hit"), ("api/rate_limit.py", "_count")]),
    ("parsing", [("api/parsing.py", "parse_command")]),
    ("reads (prefetch)", [("commands/handlers.py", "__call__")]),
    ("handler", [("commands/handlers.py", "add_member")]),
    ("save (one transaction)", [("commands/bulk.py", "aggregate_events"), ("commands/bulk.py", "write_events")]),
    ("response", [("api/resources.py", "answer")]),
    ("metrics", [("prometheus_client/metrics.py", "inc"), ("prometheus_client/metrics.py", "observe"), ("api/metrics.py", "observe"), ("api/metrics.py", "flush")]),
]  # fmt: skip
TOTALS = [("falcon/app.py", "__call__"), ("api/rate_limit.py", "_count")]
TOTALS += [("commands/group_commit.py", "_commit"), ("api/metrics.py", "_flush_every")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    sys.path.insert(0, str(options.code.resolve()))
    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.config import Config

    config = Config.from_env()
    profiles: list[cProfile.Profile] = []

    def profile_this_thread(_frame: FrameType, _event: str, _arg: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()  # replaces this hook in the thread that called it

    with bootstrap(config, create_tables=False) as services:
        token = services.app.issue_token("stages", "bench", ["community:add"], [], None, None)
        client = testing.TestClient(create_app(services))
        keys = [f"stages-{uuid.uuid4()}" for _ in range(CALLS)]
        threading.setprofile(profile_this_thread)  # the committer and limiter start lazily
        main_thread = cProfile.Profile(time.thread_time)
        profiles.append(main_thread)
        main_thread.enable()
        for i, key in enumerate(keys):
            send(client, token, i, key)
        main_thread.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        replays = cProfile.Profile(time.thread_time)  # answered in the request thread
        replays.enable()
        for i, key in enumerate(keys):
            send(client, token, i, key, replayed=True)
        replays.disable()
    for profile in profiles:
        profile.disable()
    measured = {"new": stages(profiles), "replay": stages([replays])}
    if options.json:
        print(json.dumps(measured))
    else:
        print(report(measured["new"], "add-member request, new key"))
        print(report(measured["replay"], "replay"))


def send(client: testing.TestClient, token: str, i: int, key: str, replayed: bool = False) -> None:
    body = {
        "data": {
            "type": "communityMembership",
            "attributes": {"personId": 1 + i % PEOPLE, "communityId": 1},
        }
    }
    result = client.simulate_post(
        "/api/v1/ops/people/communities/add",
        json=body,
        headers={"Authorization": f"Bearer {token}", "X-CIO-Idempotency-Key": key},
    )
    assert result.status_code == 200, result.text
    assert (result.headers.get("Idempotent-Replayed") == "true") == replayed


def stages(profiles: list[cProfile.Profile]) -> dict[str, float]:
    """CPU µs of one call per stage, and "total"."""
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    if out := os.environ.get("OPS_BENCH_PROFILE_OUT"):  # for snakeviz, or pstats by hand
        stats.dump_stats(out)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]

    def cumulative(functions: list[tuple[str, str]]) -> float:
        return sum(
            row[3]
            for (file, _line, name), row in table.items()
            if any(file.endswith(suffix) and name == fn for suffix, fn in functions)
        )

    shares = {stage: cumulative(functions) for stage, functions in STAGES}
    hit = cumulative([("api/rate_limit.py", "hit")])
    in_request_thread = shares["admission (token, checks, key)"] + sum(
        shares[stage] for stage in ("parsing", "reads (prefetch)", "response", "metrics")
    )
    shares["admission (token, checks, key)"] -= hit
    shares["committer (queue, unit of work)"] = (
        cumulative([("commands/group_commit.py", "_commit")])
        - shares["handler"]
        - shares["save (one transaction)"]
    )
    shares["HTTP (falcon, in-process)"] = cumulative(TOTALS[:1]) - in_request_thread
    shares["total"] = cumulative(TOTALS)
    return {stage: seconds / CALLS * 1e6 for stage, seconds in shares.items()}


def report(measured: dict[str, float], what: str) -> str:
    total = measured["total"]
    lines = [
        f"CPU of one {what}, {CALLS} sequential calls in-process under cProfile "
        f"({total:,.0f} µs each, profiled):"
    ]
    for stage, micros in sorted(measured.items(), key=lambda item: -item[1]):
        if micros > 0 and stage != "total":
            lines.append(f"  {stage:32} {micros:7,.0f} µs  {100 * micros / total:5.1f} %")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
