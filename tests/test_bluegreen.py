"""Rebuilds that readers never notice (issue 20), on both stores: a rebuild builds its
tables beside the live ones and swaps them in at once; readers never see anything
between, a killed rebuild changes nothing and the next one finishes it, two at once
are refused, and an altered log never becomes the new truth by a rebuild."""

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import pytest

from api.config import Config
from commands.application import PersonRow
from projections import start_projections
from projections.audit import AuditFilters
from projections.runner import wait_until
from tests.conftest import POSTGRES_URL, new_id
from tests.server import pm_ops
from tests.test_audit_cli import read_state, tamper
from tests.test_console_http import audit_token, sign_in
from tests.test_projections import add_member, caught_up, invoke, set_code, snapshot
from tests.test_upgrade import run_sql

PEOPLE = 4000  # three events each: enough batches that a rebuild takes a while


def import_people(services: Any, count: int = PEOPLE) -> list[int]:
    ids = [new_id() for _ in range(count)]
    tag = new_id()
    services.app.import_people(
        [PersonRow(i + 2, pid, f"p{i}.{tag}@example.com") for i, pid in enumerate(ids)]
    )
    return ids


def status(config: Config) -> dict[str, dict[str, Any]]:
    result = invoke(config, "projections", "status", "--format", "json")
    assert result.exit_code == 0, result.output
    return {row["projection"]: row for row in map(orjson.loads, result.stdout.splitlines())}


def audit_of(config: Config, person: int) -> list[dict[str, Any]]:
    result = invoke(config, "audit", "--person", str(person), "--format", "json")
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def spawn(config: Config, *args: str) -> "subprocess.Popen[str]":
    """`pm-ops ARGS` as a process of its own (it can be stopped or killed)."""
    return subprocess.Popen(
        [pm_ops(), "--database-url", config.database_url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def niceness(pid: int) -> int:
    """A process's nice value, as ps shows it (/proc/PID/stat, the 19th field)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def end(process: "subprocess.Popen[str]") -> None:
    process.send_signal(signal.SIGCONT)
    process.terminate()
    try:
        process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@contextmanager
def a_hung_runner(config: Config, name: str) -> Iterator["subprocess.Popen[str]"]:
    """`pm-ops projections run --only NAME`, caught up, then stopped (SIGSTOP): it holds
    the projection's lock and answers no request to stand by, as a hung runner would.
    A rebuild therefore waits at its hand-over: built, not yet swapped in."""
    runner = spawn(config, "projections", "run", "--only", name, "--poll", "0.1")
    try:
        assert wait_until(
            lambda: status(config)[name]["runner"] == "active" and not status(config)[name]["lag"],
            30,
            0.2,
        ), runner.stderr
        runner.send_signal(signal.SIGSTOP)
        yield runner
    finally:
        end(runner)


def waiting_at_hand_over(config: Config, name: str) -> bool:
    rows = status(config)
    rebuild = rows.get(f"{name} (rebuild)")
    return bool(rebuild and rebuild["running"] and rows[name]["paused"] and not rebuild["lag"])


def leftovers(config: Config) -> list[str]:
    """Tables a rebuild builds or replaces, still in the store."""
    pattern = "%\\_\\_re%"  # __rebuild, __retired
    if config.is_postgres:
        with psycopg.connect(POSTGRES_URL) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                (config.schema, pattern),
            ).fetchall()
    else:
        import sqlite3

        with sqlite3.connect(config.store.sqlite_path) as conn:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
                (pattern,),
            ).fetchall()
    return [row[0] for row in rows]


def test_a_reader_polling_during_rebuilds_always_reads_the_whole_model(
    config, services, client, directory
):
    people = [directory.person_id, *import_people(services)]
    running = start_projections(config, ("state", "audit"), poll_seconds=0.05)
    problems: list[str] = []
    reads = {"during": 0}
    rebuilding = threading.Event()
    stop = threading.Event()

    def read() -> None:  # what the CLI and the console read, as often as it can
        models, seen = services.read_models, 0
        for turn in range(10**9):
            if stop.is_set():
                return
            person = people[turn % len(people)] if turn % 2 else people[-1]
            if models.state.person(person) is None:
                problems.append(f"person {person} not found")
            trail = len(list(models.audit.entries(AuditFilters(person=directory.person_id))))
            if trail < seen:
                problems.append(f"the audit trail went from {seen} to {trail} entries")
            seen = max(seen, trail)
            reads["during"] += rebuilding.is_set()

    def write() -> None:  # the API keeps changing the model meanwhile
        for turn in range(10**9):
            if stop.is_set():
                return
            set_code(client, directory, directory.person_id, f"VC-{turn}")
            add_member(client, directory, people[turn % len(people)])

    try:
        assert wait_until(lambda: caught_up(services.app, config, "state", "audit"), 30)
        threads = [threading.Thread(target=read), threading.Thread(target=write)]
        for thread in threads:
            thread.start()
        rebuilding.set()
        for name in ("state", "audit", "state", "audit"):
            result = invoke(config, "projections", "rebuild", name)
            assert result.exit_code == 0, result.output
        rebuilding.clear()
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        running.stop()
    assert problems == []
    assert reads["during"] > 10
    assert leftovers(config) == []
    assert invoke(config, "projections", "run", "--once", "--only", "state").exit_code == 0
    assert invoke(config, "projections", "run", "--once", "--only", "audit").exit_code == 0
    assert invoke(config, "verify").exit_code == 0


def test_a_rebuild_in_progress_is_shown_and_a_second_one_is_refused(
    config, services, client, directory
):
    import_people(services)
    assert set_code(client, directory, directory.person_id, "VC-Before").status_code == 200
    console = sign_in(client, audit_token(directory))
    with a_hung_runner(config, "audit") as runner:
        trail = audit_of(config, directory.person_id)
        live = status(config)["audit"]["position"]
        first = spawn(config, "projections", "rebuild", "audit", "--wait", "60", "--nice", "15")
        try:
            assert wait_until(lambda: waiting_at_hand_over(config, "audit"), 60, 0.2)
            # It gives way to the API: `ps -o ni` shows the rebuild at the nice value asked
            # (this process may already run at the default, 10, after in-process rebuilds).
            assert niceness(first.pid) == 15
            assert "[default: 10;" in invoke(config, "projections", "rebuild", "--help").output

            row = status(config)["audit (rebuild)"]
            assert row["rebuild_of"] == "audit" and row["position"] == row["head"]
            assert row["runner"].startswith("rebuilding beside the live tables")
            shown = invoke(config, "projections", "status")
            assert "audit (rebuild)" in shown.stdout
            page = client.simulate_get("/console/integrity", headers=console)
            line = page.text.split("audit (rebuild)</th>", 1)[1].split("</tr>", 1)[0]
            assert "rebuilding beside the live tables" in line

            read = invoke(config, "audit", "--person", str(directory.person_id), "--format", "json")
            assert [orjson.loads(line) for line in read.stdout.splitlines()] == trail
            assert "a rebuild is in progress" in read.stderr
            assert f"you are reading the model as of position {live}" in read.stderr
            assert "is `pm-ops projections run`" not in read.stderr

            second = invoke(config, "projections", "rebuild", "audit")
            assert second.exit_code != 0
            assert "a rebuild of the audit projection is already running" in second.output
            assert "Traceback" not in second.output

            runner.send_signal(signal.SIGCONT)  # it stands by, and the swap happens
            out, err = first.communicate(timeout=60)
            assert first.returncode == 0, err
            assert "audit rebuilt up to position" in out
        finally:
            end(first)
        assert "audit (rebuild)" not in status(config)
        # The runner carries on from the swapped-in position.
        assert set_code(client, directory, directory.person_id, "VC-After").status_code == 200
        assert wait_until(lambda: caught_up(services.app, config, "audit"), 30)
        assert [e["new_value"] for e in audit_of(config, directory.person_id)][-2:] == [
            "VC-Before",
            "VC-After",
        ]
    assert leftovers(config) == []


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_rebuild_stopped_before_its_swap_changes_nothing_and_the_next_one_finishes(
    config, services, client, directory, stop
):
    """kill -9: no clean-up, no goodbye. Ctrl-C: it says what it left, and lets the
    runner carry on at once."""
    import_people(services)
    assert set_code(client, directory, directory.person_id, "VC-Before").status_code == 200
    assert invoke(config, "projections", "run", "--once", "--only", "state").exit_code == 0
    with a_hung_runner(config, "audit") as runner:
        before = snapshot(services.app, config)
        trail = audit_of(config, directory.person_id)
        killed = spawn(config, "projections", "rebuild", "audit", "--wait", "60")
        try:
            assert wait_until(lambda: waiting_at_hand_over(config, "audit"), 60, 0.2)
            os.kill(killed.pid, stop)
            _, said = killed.communicate(timeout=30)
        finally:
            end(killed)
        if stop == signal.SIGINT:
            assert killed.returncode == 130
            assert "interrupted: the live tables are unchanged" in said
            assert "Traceback" not in said
            assert not status(config)["audit"]["paused"]
        assert snapshot(services.app, config) == before
        assert audit_of(config, directory.person_id) == trail
        row = status(config)["audit (rebuild)"]
        assert not row["running"] and row["position"] > 0
        assert row["runner"].startswith("interrupted at")
        assert "pm-ops projections rebuild audit` resumes it" in row["runner"]

        runner.send_signal(signal.SIGCONT)  # back at work once the killed pause runs out
        assert set_code(client, directory, directory.person_id, "VC-After").status_code == 200
        resumed = invoke(config, "projections", "rebuild", "audit")
        assert resumed.exit_code == 0, resumed.output
        assert wait_until(lambda: caught_up(services.app, config, "audit"), 30)
        assert [e["new_value"] for e in audit_of(config, directory.person_id)][-2:] == [
            "VC-Before",
            "VC-After",
        ]
    assert "audit (rebuild)" not in status(config)
    assert leftovers(config) == []
    assert invoke(config, "verify").exit_code == 0


def test_an_altered_log_refuses_the_chains_swap_and_leaves_nothing_behind(
    config, services, client, directory
):
    import_people(services, 500)
    assert set_code(client, directory, directory.person_id, "VC-A").status_code == 200
    ran = invoke(config, "projections", "run", "--once", "--only", "chain", "--only", "audit")
    assert ran.exit_code == 0, ran.output
    edited = audit_of(config, directory.person_id)[-1]["position"]
    before = snapshot(services.app, config)["ops_chain"]
    tamper(
        config,
        services,
        "UPDATE {t} SET state=? WHERE rowid=?",
        "UPDATE {t} SET state=%s WHERE notification_id=%s",
        (read_state(config, edited).replace(b'"VC-A"', b'"VC-Z"'), edited),
    )

    refused = invoke(config, "projections", "rebuild", "chain")
    assert refused.exit_code != 0
    assert f"position {edited}: event was changed after it was recorded" in refused.output
    assert "--accept-current-log" in refused.output
    assert snapshot(services.app, config)["ops_chain"] == before
    assert "chain (rebuild)" not in status(config)
    assert leftovers(config) == []


def test_a_link_edited_in_the_live_chain_refuses_the_swap_too(config, services, directory):
    import_people(services, 200)
    assert invoke(config, "projections", "run", "--once", "--only", "chain").exit_code == 0
    edited = services.app.recorder.max_notification_id() // 2
    run_sql(
        config,
        f"UPDATE {config.table('ops_chain')} SET chain_hash = '{'0' * 64}' "
        f"WHERE position = {edited}",
    )
    refused = invoke(config, "projections", "rebuild", "chain")
    assert refused.exit_code != 0
    assert f"position {edited}: the chain table itself was altered here" in refused.output
    assert leftovers(config) == []


def test_rebuilding_every_projection_twice_leaves_one_copy_of_each_table_and_index(
    config, services, client, directory
):
    import_people(services, 300)
    assert add_member(client, directory, directory.person_id).status_code == 200
    assert invoke(config, "projections", "run", "--once").exit_code == 0
    live = snapshot(services.app, config)
    indexes = index_names(config)
    for _ in range(2):
        result = invoke(config, "projections", "rebuild", "--all")
        assert result.exit_code == 0, result.output
        for name in ("state", "audit", "chain", "activity"):
            assert f"{name} rebuilt up to position" in result.output
        assert "checkpoints rebuilt" not in result.output  # off without a signing key
    assert invoke(config, "projections", "run", "--once").exit_code == 0  # creates nothing new
    assert snapshot(services.app, config) == live
    assert {table: len(names) for table, names in index_names(config).items()} == {
        table: len(names) for table, names in indexes.items()
    }
    assert leftovers(config) == []
    assert invoke(config, "verify").exit_code == 0
    assert invoke(config, "projections", "rebuild").exit_code != 0  # a name, or --all


def index_names(config: Config) -> dict[str, list[str]]:
    """The indexes on each of our tables (primary keys and unique ones included)."""
    if config.is_postgres:
        with psycopg.connect(POSTGRES_URL) as conn:
            rows = conn.execute(
                "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = %s "
                "AND tablename LIKE 'ops\\_%%'",
                (config.schema,),
            ).fetchall()
    else:
        import sqlite3

        with sqlite3.connect(config.store.sqlite_path) as conn:
            rows = conn.execute(
                "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name LIKE 'ops\\_%' ESCAPE '\\'"
            ).fetchall()
    found: dict[str, list[str]] = {}
    for table, index in rows:
        found.setdefault(table, []).append(index)
    return found
