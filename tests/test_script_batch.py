"""The `--from` run in-process (api/script/batch.py) over real HTTP to the app on a loopback
port, on both stores: outcomes and failures, where it stops, retries with the row's own
key, resuming after an interruption, and pacing."""

from pathlib import Path
from typing import Any

from api.client import OpsClient
from api.script import exit_codes
from api.script.batch import BatchRun, Failure, Pacer, run_batch
from api.script.operation import Operation, Result
from api.script.rows import Row, read_rows
from commands.operations import BY_NAME
from tests.conftest import new_id
from tests.helpers import deliveries, member_added, more_people, write_csv


class Seen:
    """An observer that keeps what the batch reported, row by row."""

    def __init__(self, interrupt_at_line: int | None = None) -> None:
        self.rows: list[tuple[int, str]] = []
        self.interrupt_at_line = interrupt_at_line

    def row_done(self, row: Row, result: Result | None, failure: Failure | None) -> None:
        outcome = result.as_dict()["outcome"] if result is not None else f"failed:{failure.code}"
        self.rows.append((row.line, outcome))
        if row.line == self.interrupt_at_line:
            raise KeyboardInterrupt  # Ctrl-C while this row is on screen


NO_WAIT = Pacer(0)


def run_file(
    url: str, token: str, path: Path, operation: Operation, **options: Any
) -> tuple[BatchRun, list[tuple[int, str]]]:
    """The run, and what the observer was told about each row."""
    observer = options.pop("observer", None) or Seen()
    client = OpsClient(url, token, retries=options.pop("retries", 0), backoff=0.01)
    run = run_batch(client, operation, read_rows(path, operation), NO_WAIT, observer)
    return run, observer.rows


def test_each_row_is_one_call_and_fix_your_input_answers_fail_only_their_row(
    server, directory, services, tmp_path
):
    d = directory
    path = write_csv(
        tmp_path / "people.csv",
        ["personId", "email"],
        [[d.person_id, ""], ["", d.email], [new_id(), ""], ["x@y", ""], ["", d.shared_email]],
    )
    run, seen = run_file(server, d.token, path, Operation(BY_NAME["add-member"], d.community_id))
    assert seen == [
        (2, "added"),
        (3, "already_member"),
        (4, "failed:person_not_found"),
        (5, "failed:invalid_row"),
        (6, "failed:email_ambiguous"),
    ]
    assert (run.rows, run.succeeded, run.stopped, run.interrupted) == (5, 2, None, False)
    assert +run.outcomes == {"added": 1, "already_member": 1}
    assert [(f.row.line, f.status, f.code) for f in run.failures] == [
        (4, "404", "person_not_found"),
        (5, "", "invalid_row"),
        (6, "409", "email_ambiguous"),
    ]
    assert "It looks like an email" in run.failures[1].detail
    assert exit_codes.for_batch(run) == exit_codes.EXIT_FIX_INPUT
    assert member_added(services) == 1 and deliveries(services) == 4  # the invalid row: no call


def test_a_token_problem_stops_the_run_at_its_row(server, directory, services, tmp_path):
    people = more_people(services, 3)
    path = write_csv(tmp_path / "p.csv", ["personId"], [["oops"], *[[p] for p in people]])
    run, seen = run_file(
        server, "pmo_bad", path, Operation(BY_NAME["add-member"], directory.community_id)
    )
    assert seen == [(2, "failed:invalid_row")]
    assert run.stopped is not None
    assert (run.stopped.status, run.stopped.code) == (401, "token_invalid")
    assert len(run.failures) == 1  # the row it stopped at is not a failure of the input
    assert exit_codes.for_batch(run) == exit_codes.EXIT_TOKEN
    assert member_added(services) == 0


def test_a_transient_failure_is_retried_with_the_rows_own_key(
    directory, services, make_proxy, tmp_path
):
    people = more_people(services, 2)
    path = write_csv(tmp_path / "p.csv", ["personId"], [[p] for p in people])
    operation = Operation(BY_NAME["add-member"], directory.community_id)
    proxy = make_proxy(["forward-then-503", "forward", "429"])
    run, seen = run_file(proxy.url, directory.token, path, operation, retries=2)
    assert seen == [(2, "added"), (3, "added")]
    assert run.outcomes["replayed"] == 1  # the server ran row 2 once, then replayed it
    file = read_rows(path, operation)
    expected = [file.key(operation, row) for row in file.rows]
    assert [(key, status) for _, key, status in proxy.seen] == [
        (expected[0], 503),
        (expected[0], 200),
        (expected[1], 429),
        (expected[1], 200),
    ]
    assert member_added(services) == 2 and deliveries(services) == 2


def test_an_interrupted_run_resumes_without_running_a_row_twice(
    server, directory, services, tmp_path
):
    people = more_people(services, 5)
    path = write_csv(tmp_path / "p.csv", ["personId"], [[p] for p in people])
    operation = Operation(BY_NAME["add-member"], directory.community_id)
    first, seen = run_file(
        server, directory.token, path, operation, observer=Seen(interrupt_at_line=3)
    )
    assert seen == [(2, "added"), (3, "added")]
    assert (first.interrupted, first.interrupted_at) == (True, 3)
    assert exit_codes.for_batch(first) == exit_codes.EXIT_INTERRUPTED
    assert member_added(services) == 2  # row 3's call was answered before the Ctrl-C

    resumed, _ = run_file(server, directory.token, path, operation)
    assert (resumed.interrupted, resumed.succeeded, resumed.outcomes["added"]) == (False, 5, 5)
    assert resumed.outcomes["replayed"] == 2
    assert exit_codes.for_batch(resumed) == exit_codes.EXIT_OK
    assert member_added(services) == 5 and deliveries(services) == 5

    # The same people in a file with other content get new keys: run afresh, not replayed.
    other = write_csv(tmp_path / "q.csv", ["personId", "note"], [[p, "again"] for p in people])
    fresh, _ = run_file(server, directory.token, other, operation)
    assert (fresh.outcomes["already_member"], fresh.outcomes["replayed"]) == (5, 0)
    assert member_added(services) == 5 and deliveries(services) == 10


def test_the_pacer_spaces_the_starts_of_calls():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    pacer = Pacer.per_minute(120, clock=lambda: now[0], sleep=sleep)  # one call every 0.5 s
    pacer.wait()  # the first call starts at once
    pacer.wait()
    now[0] += 0.2  # a slow call: only the rest of the interval is waited
    pacer.wait()
    now[0] += 2.0  # a long pause is not made up for with a burst
    pacer.wait()
    pacer.wait()
    assert slept == [0.5, 0.3, 0.5]
