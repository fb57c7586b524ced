"""Where the CPU of one add-member request goes, per stage (run by bench/run.py).

The real app (create_app on the store in OPS_DATABASE_URL, PostgreSQL in the bench)
is called in-process through falcon's TestClient, one request at a time, under
cProfile with a per-thread CPU clock: the request thread, the group committer and the
rate-limit thread each get a profile, so waiting costs nothing and work done for a
request in another thread is still counted. The server's own HTTP parsing is not in
this picture (wrk's figures include it). One request at a time means every save
carries one command; under load a save is shared by the batch, so `save` shrinks.
Profiling inflates Python-heavy stages: read the shares, not the microseconds.
OPS_BENCH_PROFILE_OUT=FILE keeps the merged profile for a closer look."""

import cProfile
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from api.app import create_app
from api.bootstrap import bootstrap
from api.config import Config

CALLS = int(os.environ.get("OPS_BENCH_STAGE_CALLS", "2000"))
PEOPLE = int(os.environ.get("OPS_BENCH_PEOPLE", "100000"))

# (stage, [(file suffix, function)]) — cumulative time of these functions, summed.
STAGES = [
    ("admission (token, checks, key)", [("api/gate.py", "admit")]),
    ("rate limit", [("api/rate_limit.py", "hit"), ("api/rate_limit.py", "_count")]),
    ("parsing", [("api/parsing.py", "parse_command")]),
    ("reads (prefetch)", [("commands/handlers.py", "__call__")]),
    ("handler", [("commands/handlers.py", "add_member")]),
    ("save (one transaction)", [("commands/bulk.py", "write_aggregates")]),
    ("response", [("api/resources.py", "answer")]),
    ("metrics", [("prometheus_client/metrics.py", "inc"), ("prometheus_client/metrics.py", "observe")]),
]  # fmt: skip
TOTALS = [("falcon/app.py", "__call__"), ("api/rate_limit.py", "_count")]
TOTALS += [("commands/group_commit.py", "_commit")]


def main() -> None:
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
    print(report(profiles, "add-member request, new key"))
    print(report([replays], "replay"))


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


def report(profiles: list[cProfile.Profile], what: str) -> str:
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

    total = cumulative(TOTALS)
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
    lines = [
        f"CPU of one {what}, {CALLS} sequential calls in-process under cProfile "
        f"({total / CALLS * 1e6:,.0f} µs each, profiled):"
    ]
    for stage, seconds in sorted(shares.items(), key=lambda item: -item[1]):
        if seconds <= 0:
            continue
        lines.append(
            f"  {stage:32} {seconds / CALLS * 1e6:7,.0f} µs  {100 * seconds / total:5.1f} %"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
