"""What a `--from` run prints and writes, in-process (api/script/report.py): the summary in
words and as JSON, the failed-rows file, an interrupted run, errors of a single call, and
the per-row lines beside the progress bar."""

import json
from collections import Counter

from api.client import OpsError
from api.script.batch import BatchRun, Failure
from api.script.report import (
    Screen,
    finish,
    print_error,
    summary_lines,
    summary_record,
    write_failures,
)
from api.script.rows import Row
from tests.helpers import read_csv

HEADER = ["personId", "email", "note"]
RERUN = "pm-ops call add-member --from people.failed.csv --community 42"


def row(line: int, person: str = "", email: str = "", note: str = "") -> Row:
    raw = {"personId": person, "email": email, "note": note}
    return Row(line, raw, {"personId": person, "email": email})


def failures() -> list[Failure]:
    return [
        Failure(row(4, "jane@x.com", note="old"), "", "invalid_row", "personId must be ..."),
        Failure(row(5, "9", note="nobody"), "404", "person_not_found", "No person 9.", True),
        Failure(row(6, email="s@x.com"), "409", "email_ambiguous", "2 different people", True),
    ]


def error(status: int | None, code: str) -> OpsError:
    return OpsError(status, code, f"{code} detail.", "pm-ops-call-k1")


def test_the_summary_counts_outcomes_and_says_how_to_run_the_failed_rows(tmp_path):
    run = BatchRun(7, Counter(added=2, already_member=1), failures())
    lines = summary_lines(run, tmp_path / "people.failed.csv", RERUN, earlier_failed_file=False)
    assert lines == [
        "3 of 7 rows succeeded (2 added, 1 already a member).",
        f"3 failed: written to {tmp_path}/people.failed.csv, with the reason in its "
        f"error_detail column. Fix those rows, then run: {RERUN}",
        "2 of the failures are answers stored by an earlier run of this same file and "
        "replayed; to try those rows again (say, after the person was imported), run the "
        "failed-rows file: its rows get new keys.",
    ]


def test_replays_plurals_and_a_failed_file_left_from_an_earlier_run(tmp_path):
    outcomes = Counter(already_member=2, changed=1, cleared=1, unchanged=1, replayed=4)
    run = BatchRun(5, outcomes)
    failed = tmp_path / "p.failed.csv"
    assert summary_lines(run, failed, RERUN, earlier_failed_file=True) == [
        "5 of 5 rows succeeded (2 already members, 1 changed, 1 cleared, 1 unchanged; 4 of "
        "them done by an earlier run with this file, replayed by the server, not repeated).",
        f"No failures; {failed} is from an earlier run and out of date.",
    ]
    assert summary_lines(BatchRun(0), failed, RERUN, False) == ["0 of 0 rows succeeded."]


def test_a_stopped_run_says_who_fixes_it_and_to_re_run_the_same_command(tmp_path):
    run = BatchRun(3, Counter(added=1), stopped=error(503, "unavailable"))
    lines = summary_lines(run, tmp_path / "f.csv", RERUN, earlier_failed_file=True)
    assert lines == [
        "1 of 3 rows succeeded (1 added).",
        "Stopped: 503 unavailable: unavailable detail.",
        "Tell engineering: the platform is unreachable or temporarily unhealthy.",
        "Then re-run the same command: rows already done are replayed by the server, "
        "not run again.",
    ]
    unreachable = BatchRun(1, stopped=error(None, "unreachable"))
    assert "Stopped: unreachable: unreachable detail." in summary_lines(
        unreachable, tmp_path / "f.csv", RERUN, False
    )


def test_the_json_summary(tmp_path):
    failed = tmp_path / "p.failed.csv"
    run = BatchRun(5, Counter(added=1, replayed=1), failures()[:1])
    assert summary_record(run, failed) == {
        "summary": True,
        "rows": 5,
        "succeeded": 1,
        "failed": 1,
        "failedFile": str(failed),
        "stopped": None,
        "added": 1,
        "already_member": 0,
        "changed": 0,
        "cleared": 0,
        "unchanged": 0,
        "replayed": 1,
    }
    stopped = summary_record(BatchRun(1, stopped=error(401, "token_invalid")), failed)
    assert (stopped["failedFile"], stopped["stopped"]["exitCode"]) == (None, 2)


def test_the_failed_rows_file_keeps_the_rows_as_they_were_with_the_reason(tmp_path):
    path = tmp_path / "p.failed.csv"
    write_failures(path, HEADER, failures())
    written = read_csv(path)
    assert list(written[0]) == [*HEADER, "error_status", "error_code", "error_detail"]
    assert [(r["personId"], r["note"], r["error_status"]) for r in written] == [
        ("jane@x.com", "old", ""),
        ("9", "nobody", "404"),
        ("", "", "409"),
    ]
    # Running a failed-rows file again: its error columns are replaced, not repeated.
    again = [Failure(Row(2, written[1], {}), "404", "person_not_found", "Still nobody.")]
    write_failures(path, list(written[0]), again)
    assert read_csv(path) == [written[1] | {"error_detail": "Still nobody."}]
    write_failures(tmp_path / "none.csv", HEADER, [])
    assert not (tmp_path / "none.csv").exists()


def test_finish_prints_the_summary_to_stderr_and_the_json_last_on_stdout(tmp_path, capsys):
    failed = tmp_path / "p.failed.csv"
    finish(BatchRun(7, Counter(added=4), failures()), HEADER, failed, RERUN, as_json=True)
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == "4 of 7 rows succeeded (4 added)."
    assert json.loads(out)["failedFile"] == str(failed)
    assert len(read_csv(failed)) == 3


def test_an_interrupted_run_writes_its_failures_and_says_how_to_resume(tmp_path, capsys):
    failed = tmp_path / "p.failed.csv"
    run = BatchRun(9, Counter(added=2), failures()[:1], interrupted=True, interrupted_at=5)
    finish(run, HEADER, failed, RERUN, as_json=True)
    out, err = capsys.readouterr()
    assert out == ""  # no summary: the run is not over
    assert err == (
        "\nInterrupted at line 5. Re-run the same command to resume: rows already done are "
        "replayed by the server, not run again.\n"
    )
    assert [r["error_code"] for r in read_csv(failed)] == ["invalid_row"]


def test_a_single_calls_error_in_words_and_as_json(capsys):
    print_error(error(404, "person_not_found"), as_json=False)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "Error: 404 person_not_found: person_not_found detail.",
        "You: read the detail above and fix the input.",
    ]
    print_error(error(None, "timeout"), as_json=False)
    assert capsys.readouterr().err.splitlines()[-1] == (
        "To retry later without any risk of running it twice: --key pm-ops-call-k1"
    )
    print_error(error(429, "rate_limited"), as_json=True)
    document = json.loads(capsys.readouterr().out)
    assert (document["ok"], document["exitCode"], document["idempotencyKey"]) == (
        False,
        4,
        "pm-ops-call-k1",
    )


def test_rows_and_messages_beside_the_progress_bar(capsys):
    screen = Screen()
    ok, bad = row(2, "1"), failures()[1]
    with screen.progress("add-member", "people.csv", 2, as_json=False) as printer:
        printer.row_done(ok, None, None)
        screen.retry(error(503, "unavailable"), 2, 1.5, 6)
        printer.row_done(bad.row, None, bad)
    screen.err("after the bar")
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        "503 unavailable: unavailable detail. Retrying in 1.5 s with the same idempotency key (attempt 2 of 6)."
        in err
    )
    assert "line 5: 404 person_not_found: No person 9." in err
    assert "2/2" in err and "1 failed" in err
    assert err.endswith("after the bar\n")

    with screen.progress("add-member", "people.csv", 2, as_json=True) as printer:
        printer.row_done(bad.row, None, bad)
    out, _ = capsys.readouterr()
    assert json.loads(out) == {
        "line": 5,
        "ok": False,
        "status": 404,
        "code": "person_not_found",
        "detail": "No person 9.",
    }
