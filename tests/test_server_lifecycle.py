"""`pm-ops serve` and its processes live and die together, however serve ends."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from projections.read_models import DB_PROJECTIONS
from tests.pg_cluster import wait_until
from tests.server import alive, descendants, pm_ops, running_server, running_server_process

STOP_BOUND = 5.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_serve_leaves_nothing_behind_and_restarts_nothing(config, tmp_path, signum):
    env = {"TMPDIR": str(tmp_path)}  # where serve makes its metrics directory
    with running_server_process(config.database_url, "--workers", "2", env=env) as (_, serve):
        tree = descendants(serve.pid)
        assert len(tree) >= 3, "two workers and the projections child"
        assert list(tmp_path.glob("pm-ops-metrics-*")), "serve shares metrics between workers"
        time.sleep(1)  # the projections child is running
        started = time.monotonic()
        serve.send_signal(signum)
        born: set[int] = set()
        while serve.poll() is None and time.monotonic() - started < STOP_BOUND + 5:
            born |= descendants(serve.pid) - tree  # a restart would show up here
            time.sleep(0.02)
        serve.wait(timeout=1)
        took = time.monotonic() - started
    assert not born, "nothing is started while serve stops"
    assert took < STOP_BOUND, f"serve took {took:.1f} s to stop"
    assert not [pid for pid in tree if alive(pid)]
    assert not list(tmp_path.glob("pm-ops-metrics-*")), "serve removes its metrics directory"


def test_a_killed_serve_takes_its_workers_and_projections_with_it(config):
    with running_server_process(config.database_url, "--workers", "2") as (_, serve):
        tree = descendants(serve.pid)
        assert len(tree) >= 3
        serve.kill()
        serve.wait()
        wait_until(lambda: not [pid for pid in tree if alive(pid)], timeout=5)


def test_a_fresh_runner_is_not_kept_standing_by_after_serve_was_killed(config, tmp_path):
    with running_server_process(config.database_url) as (_, serve):
        time.sleep(1.5)  # its projections child holds every projection's lock
        serve.kill()
        serve.wait()
    log = tmp_path / "fresh.log"
    with log.open("w") as sink:
        fresh = subprocess.Popen(
            [pm_ops(), "--database-url", config.database_url, "projections", "run"],
            stderr=sink,
        )
    try:
        # Every projection active, none standing by behind a dead serve's child.
        # (checkpoints are off without OPS_CHECKPOINT_KEY)
        running = [name for name in DB_PROJECTIONS if name != "checkpoints"]
        expected = [f"projection {name}: active" for name in (*running, "slack")]
        wait_until(lambda: all(line in log.read_text() for line in expected), timeout=10)
    finally:
        fresh.terminate()
        fresh.wait(timeout=10)


def test_a_start_says_what_its_threads_are_for_and_warns_of_nothing(tmp_path):
    database = f"sqlite:///{tmp_path}/ops.db"
    with (
        (tmp_path / "serve.log").open("w+b") as output,
        running_server(database, "--workers", "2", output=output),
    ):
        output.seek(0)
        printed = output.read().decode()
    assert "requests at a time" in printed, printed
    # Granian's "Configuration allows spawning up to 1024 Python threads, which seems
    # quite high…" read like a misconfiguration on every start.
    assert "seems quite high" not in printed, printed
    assert "WARNING" not in printed, printed


def metrics_directories(tmp: Path) -> set[Path]:
    return set(tmp.glob("pm-ops-metrics-*"))


def test_a_start_removes_the_metrics_directory_a_killed_serve_left_and_no_live_ones(tmp_path):
    database = f"sqlite:///{tmp_path}/ops.db"
    env = {"TMPDIR": str(tmp_path)}  # where serve makes its metrics directory
    with running_server_process(database, "--no-projections", env=env):
        live = metrics_directories(tmp_path)
        assert len(live) == 1
        with running_server_process(database, "--no-projections", env=env) as (_, doomed):
            stale = metrics_directories(tmp_path) - live
            tree = descendants(doomed.pid)
            for pid in (doomed.pid, *tree):
                os.kill(pid, signal.SIGKILL)
            doomed.wait()
            wait_until(lambda: not [pid for pid in tree if alive(pid)], timeout=5)
        assert len(stale) == 1 and all(path.exists() for path in stale), "a SIGKILL leaves it"

        with running_server_process(database, "--no-projections", env=env):
            now = metrics_directories(tmp_path)
            assert not now & stale, "the killed serve's directory is removed"
            assert live <= now, "the live serve's directory is kept"
            assert len(now - live) == 1, "the new serve has its own"
