"""The script client (`pm-ops call`, api.client) as a user runs it: a subprocess against a
real server on a loopback port, on both stores. Faults are injected at the edge by a small
HTTP proxy (`make_proxy`), never by mocks. The parts it is built from are tested in-process
in test_script_*.py."""

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from api.client import MembershipResult, OpsClient, OpsError, SignupCodeResult
from tests.conftest import new_id
from tests.helpers import (
    call,
    code_changes,
    deliveries,
    member_added,
    more_people,
    read_csv,
    write_csv,
)
from tests.server import free_port, pm_ops

# --- single calls: words, JSON, exit codes --------------------------------------------


def test_add_member_in_words_then_already_a_member(server, directory, services):
    d = directory
    args = ("add-member", "--person", str(d.person_id), "--community", str(d.community_id))
    first = call(server, d.token, *args)
    assert first.code == 0, first.err
    assert first.out.strip() == f"Added person {d.person_id} to community {d.community_id}."
    again = call(server, d.token, *args)
    assert again.code == 0
    assert again.out.strip() == (
        f"Person {d.person_id} is already a member of community {d.community_id}. Nothing changed."
    )
    assert member_added(services) == 1
    assert deliveries(services) == 2  # a fresh key per call: two deliveries, one change


def test_add_member_by_email_as_json(server, directory):
    d = directory
    run = call(
        server,
        d.token,
        "add-member",
        "--email",
        d.email.upper(),
        "--community",
        str(d.community_id),
        "--json",
    )
    assert run.code == 0, run.err
    result = run.json()
    assert result["ok"] is True
    assert result["outcome"] == "added"
    assert result["personId"] == d.person_id
    assert result["communityId"] == d.community_id
    assert result["alreadyMember"] is False
    assert result["replayed"] is False
    assert result["idempotencyKey"].startswith("pm-ops-call-")


def test_set_code_changed_unchanged_and_cleared(server, directory, services):
    d = directory
    person = ("--person", str(d.person_id))
    run = call(server, d.token, "set-code", *person, "--code", "VC-Partners")
    assert run.code == 0, run.err
    assert (
        run.out.strip() == f"Person {d.person_id}'s signup code changed from (none) to VC-Partners."
    )
    run = call(server, d.token, "set-code", *person, "--code", "Angels")
    assert "changed from VC-Partners to Angels." in run.out
    run = call(server, d.token, "set-code", *person, "--code", "Angels")
    assert run.code == 0
    assert (
        run.out.strip() == f"Person {d.person_id}'s signup code is already Angels. Nothing changed."
    )
    run = call(server, d.token, "set-code", *person, "--clear", "--json")
    assert run.code == 0
    assert run.json() | {"idempotencyKey": None} == {
        "ok": True,
        "operation": "set-code",
        "outcome": "cleared",
        "personId": d.person_id,
        "code": None,
        "previousCode": "Angels",
        "changed": True,
        "idempotencyKey": None,
        "replayed": False,
    }
    run = call(server, d.token, "set-code", *person, "--clear")
    assert run.code == 0
    assert "already cleared" in run.out and "Nothing changed." in run.out
    assert code_changes(services) == 3


def test_an_explicit_key_is_replayed_by_the_server(server, directory, services):
    d = directory
    args = ("set-code", "--person", str(d.person_id), "--code", "VC-Partners", "--key", "k-1")
    first = call(server, d.token, *args)
    second = call(server, d.token, *args)
    assert first.code == second.code == 0
    assert "changed from (none) to VC-Partners" in second.out
    assert "Replayed" in second.out and "Replayed" not in first.out
    assert code_changes(services) == 1 and deliveries(services) == 1
    reused = call(
        server, d.token, "set-code", "--person", str(d.person_id), "--clear", "--key", "k-1"
    )
    assert reused.code == 1
    assert "idempotency_key_reused" in reused.err


@pytest.mark.parametrize(
    ("case", "status", "code", "detail"),
    [
        ("unknown person", 404, "person_not_found", "No person with Play Money ID"),
        ("unknown community", 404, "community_not_found", "No community with ID"),
        ("shared email", 409, "email_ambiguous", 'Send the Play Money ID as "personId" instead'),
        ("unknown email", 404, "person_not_found", "No person has the email"),
    ],
)
def test_client_errors_exit_1_with_the_servers_detail(
    server, directory, case, status, code, detail
):
    d = directory
    person = {
        "unknown person": ("--person", str(new_id())),
        "shared email": ("--email", d.shared_email),
        "unknown email": ("--email", f"nobody.{uuid.uuid4().hex}@example.com"),
    }.get(case, ("--person", str(d.person_id)))
    community = str(new_id()) if case == "unknown community" else str(d.community_id)
    run = call(server, d.token, "add-member", *person, "--community", community)
    assert run.code == 1
    assert run.out == ""
    assert f"Error: {status} {code}: " in run.err
    assert detail in run.err
    assert "You: read the detail above and fix the input." in run.err
    as_json = call(server, d.token, "add-member", *person, "--community", community, "--json")
    assert as_json.code == 1
    document = as_json.json()
    assert (document["ok"], document["status"], document["code"]) == (False, status, code)
    assert detail in document["detail"]
    assert document["exitCode"] == 1


def test_a_bad_value_is_422_exit_1(server, directory):
    run = call(
        server,
        directory.token,
        "set-code",
        "--person",
        str(directory.person_id),
        "--code",
        "x" * 65,
    )
    assert run.code == 1
    assert "422 invalid_field" in run.err
    assert "64" in run.err


def test_token_problems_exit_2_and_never_print_the_token(server, directory):
    d = directory
    args = ("add-member", "--person", str(d.person_id), "--community", str(d.community_id))
    wrong = call(server, "pmo_not-a-real-token", *args)
    assert wrong.code == 2
    assert "401 token_invalid" in wrong.err
    assert "Tell engineering" in wrong.err
    code_only = d.issue(scopes=("code:set",))
    forbidden = call(server, code_only, *args)
    assert forbidden.code == 2
    assert "403 forbidden" in forbidden.err
    missing = call(server, "", *args)
    assert missing.code == 2
    assert "OPS_TOKEN" in missing.err
    # --token overrides OPS_TOKEN and is not printed either (call() asserts that)
    flag = call(server, "pmo_not-a-real-token", *args, "--token", d.token, env={})
    assert flag.code == 0, flag.err


def test_bad_options_exit_1(server, directory):
    d = directory
    both = call(
        server, d.token, "add-member", "--person", "1", "--email", "a@b.c", "--community", "1"
    )
    assert both.code == 1 and "exactly one of --person" in both.err
    no_code = call(server, d.token, "set-code", "--person", "1")
    assert no_code.code == 1 and "--clear" in no_code.err
    not_a_number = call(
        server, d.token, "add-member", "--person", "jane@example.com", "--community", "1"
    )
    assert not_a_number.code == 1
    no_url = call("", d.token, "add-member", "--person", "1", "--community", "1")
    assert no_url.code == 1 and "OPS_URL" in no_url.err


# --- retries: same key, one event -----------------------------------------------------


def test_a_503_after_the_server_ran_it_is_retried_with_the_same_key(
    server, directory, services, make_proxy
):
    d = directory
    proxy = make_proxy(["forward-then-503"])
    run = call(
        proxy.url,
        d.token,
        "add-member",
        "--person",
        str(d.person_id),
        "--community",
        str(d.community_id),
    )
    assert run.code == 0, run.err
    assert "Retrying in" in run.err and "same idempotency key" in run.err
    assert [status for _, _, status in proxy.seen] == [503, 200]
    keys = {key for _, key, _ in proxy.seen}
    assert len(keys) == 1 and None not in keys
    # the server ran it once, then replayed its stored outcome: "added", not "already"
    assert f"Added person {d.person_id}" in run.out and "Replayed" in run.out
    assert member_added(services) == 1
    assert deliveries(services) == 1


def test_a_503_before_the_server_is_retried(server, directory, services, make_proxy):
    d = directory
    proxy = make_proxy(["503", "503"])
    run = call(
        proxy.url, d.token, "set-code", "--person", str(d.person_id), "--code", "VC-Partners"
    )
    assert run.code == 0, run.err
    assert [status for _, _, status in proxy.seen] == [503, 503, 200]
    assert len({key for _, key, _ in proxy.seen}) == 1
    assert "Replayed" not in run.out
    assert code_changes(services) == 1 and deliveries(services) == 1


def test_a_429_waits_for_retry_after_then_retries_with_the_same_key(
    server, directory, services, make_proxy
):
    d = directory
    proxy = make_proxy(["429"])
    run = call(
        proxy.url,
        d.token,
        "add-member",
        "--person",
        str(d.person_id),
        "--community",
        str(d.community_id),
    )
    assert run.code == 0, run.err
    assert [status for _, _, status in proxy.seen] == [429, 200]
    assert len({key for _, key, _ in proxy.seen}) == 1
    assert proxy.times[1] - proxy.times[0] >= 1.0  # Retry-After: 1 honoured
    assert member_added(services) == 1 and deliveries(services) == 1


def test_still_failing_after_every_retry(server, directory, services, make_proxy):
    d = directory
    args = ("add-member", "--person", str(d.person_id), "--community", str(d.community_id))
    unhealthy = call(make_proxy(["503"] * 3).url, d.token, *args, "--retries", "2")
    assert unhealthy.code == 3
    assert "503 unavailable" in unhealthy.err and "Tell engineering" in unhealthy.err
    assert "--key pm-ops-call-" in unhealthy.err  # how to retry safely later
    limited = call(make_proxy(["429"] * 2).url, d.token, *args, "--retries", "1")
    assert limited.code == 4
    assert "Slow down" in limited.err
    assert member_added(services) == 0


def test_connection_refused_exits_3(directory):
    url = f"http://127.0.0.1:{free_port()}"
    run = call(
        url, directory.token, "add-member", "--person", "1", "--community", "1", "--retries", "1"
    )
    assert run.code == 3
    assert "unreachable" in run.err and "connection refused" in run.err
    assert "Tell engineering" in run.err


# --- the Python API --------------------------------------------------------------------


def test_python_api_returns_typed_results_and_errors(server, directory):
    d = directory
    client = OpsClient(server, d.token, retries=0)
    assert d.token not in repr(client)
    added = client.add_member(person_id=d.person_id, community_id=d.community_id)
    assert isinstance(added, MembershipResult)
    assert (added.person_id, added.community_id, added.already_member) == (
        d.person_id,
        d.community_id,
        False,
    )
    assert client.add_member(email=d.email, community_id=d.community_id).already_member
    code = client.set_code(person_id=d.person_id, code="VC-Partners", key="fixed-key")
    assert isinstance(code, SignupCodeResult)
    assert (code.code, code.previous_code, code.changed, code.replayed) == (
        "VC-Partners",
        None,
        True,
        False,
    )
    assert client.set_code(person_id=d.person_id, code="VC-Partners", key="fixed-key").replayed
    cleared = client.set_code(person_id=d.person_id, code=None)
    assert (cleared.code, cleared.previous_code, cleared.changed) == (None, "VC-Partners", True)
    with pytest.raises(OpsError) as caught:
        client.add_member(email=d.shared_email, community_id=d.community_id)
    error = caught.value
    assert (error.status, error.code, error.exit_code) == (409, "email_ambiguous", 1)
    assert error.source == {"pointer": "/data/attributes/email"}
    with pytest.raises(TypeError):
        client.set_code(person_id=d.person_id)  # type: ignore[call-arg]  # no silent clear
    with pytest.raises(ValueError):
        client.add_member(person_id=1, email="a@b.c", community_id=1)


# --- --from FILE.csv ---------------------------------------------------------------------


def test_from_csv_reports_and_writes_failed_rows(server, directory, services, tmp_path):
    d = directory
    unknown = new_id()
    source = write_csv(
        tmp_path / "people.csv",
        ["personId", "email", "note"],
        [
            [d.person_id, "", "ok by id"],
            ["", d.email, "ok by email: already a member by then"],
            ["jane@example.com", "", "old profile"],
            [unknown, "", "nobody"],
            ["", d.shared_email, "shared"],
            ["", "", "empty"],
            [d.other_person_id, "", "ok"],
        ],
    )
    run = call(
        server, d.token, "add-member", "--from", str(source), "--community", str(d.community_id)
    )
    assert run.code == 1
    assert "3 of 7 rows succeeded (2 added, 1 already a member)." in run.err
    assert "4 failed: written to" in run.err
    assert (
        f"then run: pm-ops call add-member --from {tmp_path}/people.failed.csv --community {d.community_id}"
        in run.err
    )
    assert "line 4: personId must be an integer" not in run.err  # reported with its code:
    assert "line 4: invalid_row: personId must be an integer" in run.err
    failed = read_csv(tmp_path / "people.failed.csv")
    assert [row["note"] for row in failed] == ["old profile", "nobody", "shared", "empty"]
    assert [row["error_status"] for row in failed] == ["", "404", "409", ""]
    assert [row["error_code"] for row in failed] == [
        "invalid_row",
        "person_not_found",
        "email_ambiguous",
        "invalid_row",
    ]
    assert 'put it in an "email" column' in failed[0]["error_detail"]
    assert member_added(services) == 2
    assert deliveries(services) == 5  # the invalid rows were never sent

    # Re-running the unchanged file replays every answer, failures included, and says so.
    rerun = call(
        server, d.token, "add-member", "--from", str(source), "--community", str(d.community_id)
    )
    assert rerun.code == 1
    assert "2 of the failures are answers stored by an earlier run" in rerun.err
    assert member_added(services) == 2 and deliveries(services) == 5

    # Fix the failed file (old profile -> email column, drop the others) and run it.
    fixed = write_csv(tmp_path / "fixed.csv", ["personId", "email"], [["", d.email]])
    again = call(
        server,
        d.token,
        "add-member",
        "--from",
        str(fixed),
        "--community",
        str(d.community_id),
        "--json",
    )
    assert again.code == 0, again.err
    lines = [json.loads(line) for line in again.out.splitlines()]
    assert lines[0]["line"] == 2 and lines[0]["outcome"] == "already_member"
    assert lines[-1]["summary"] is True and lines[-1]["failed"] == 0


def test_set_code_from_csv_with_a_code_column(server, directory, services, tmp_path):
    d = directory
    people = more_people(services, 2)
    source = write_csv(
        tmp_path / "codes.csv",
        ["person_id", "code"],
        [[people[0], "VC-Partners"], [people[1], ""], [d.person_id, "Angels"]],
    )
    run = call(server, d.token, "set-code", "--from", str(source))
    assert run.code == 1
    assert "2 of 3 rows succeeded (2 changed)." in run.err
    failed = read_csv(tmp_path / "codes.failed.csv")
    assert len(failed) == 1 and "An empty code never clears" in failed[0]["error_detail"]
    assert code_changes(services) == 2
    both = call(server, d.token, "set-code", "--from", str(source), "--clear")
    assert both.code == 1 and "has a code column" in both.err


def test_an_interrupted_run_resumes_without_repeating_a_call(
    server, directory, services, make_proxy, tmp_path
):
    d = directory
    people = more_people(services, 12)
    source = write_csv(tmp_path / "campaign.csv", ["personId"], [[p] for p in people])
    proxy = make_proxy()
    environment = {**os.environ, "OPS_URL": proxy.url, "OPS_TOKEN": d.token}
    args = [
        "add-member",
        "--from",
        str(source),
        "--community",
        str(d.community_id),
        "--rate",
        "240",
    ]
    process = subprocess.Popen(
        [pm_ops(), "call", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(proxy.seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # no clean-up, no goodbye: a real crash
    process.communicate(timeout=30)
    time.sleep(0.3)  # let a call that was in flight finish on the server
    done_before = member_added(services)
    assert 5 <= done_before < 12

    resumed = call(server, d.token, *args)
    assert resumed.code == 0, resumed.err
    assert "12 of 12 rows succeeded (12 added; " in resumed.err
    replayed = int(
        resumed.err.split(" of them done by an earlier run")[0].rsplit("(12 added; ", 1)[1]
    )
    assert replayed == done_before
    assert member_added(services) == 12  # exactly one per person
    assert deliveries(services) == 12  # replays leave no delivery record

    # A third run repeats nothing either: every row is a replay.
    third = call(server, d.token, *args, "--json")
    summary = json.loads(third.out.splitlines()[-1])
    assert (summary["added"], summary["replayed"], summary["failed"]) == (12, 12, 0)
    assert member_added(services) == 12 and deliveries(services) == 12


def test_from_csv_stops_on_a_token_problem(server, directory, services, tmp_path):
    people = more_people(services, 3)
    source = write_csv(tmp_path / "p.csv", ["personId"], [[p] for p in people])
    run = call(
        server,
        "pmo_bad",
        "add-member",
        "--from",
        str(source),
        "--community",
        str(directory.community_id),
    )
    assert run.code == 2
    assert "Stopped: 401 token_invalid" in run.err
    assert "re-run the same command" in run.err
    assert member_added(services) == 0


def test_from_csv_is_paced_under_the_rate(server, directory, services, make_proxy, tmp_path):
    people = more_people(services, 4)
    source = write_csv(tmp_path / "p.csv", ["personId"], [[p] for p in people])
    proxy = make_proxy()
    run = call(
        proxy.url, directory.token, "add-member", "--from", str(source),
        "--community", str(directory.community_id), "--rate", "120",
    )  # fmt: skip
    assert run.code == 0, run.err
    gaps = [b - a for a, b in zip(proxy.times, proxy.times[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.45  # 120/min: one call every 0.5 s
