"""`verify` from the console: started by a POST, run in a background thread of the
worker that took it, its stage and result kept in the shared store so any worker
can show the progress and, later, the last result with its time."""

import logging
import threading
from typing import Any

from api.console.reads import Reads
from api.console.store import ConsoleStore, VerifyRun

log = logging.getLogger("pm_ops.console")

STAGES = {
    "starting": (0, "Starting"),
    "chain": (1, "Checking the hash chain against the log"),
    "read-models": (2, "Replaying the log and comparing state and audit"),
    "finished": (3, "Finished"),
}
STEPS = 3
MAX_FINDINGS = 200


def start_verify(store: ConsoleStore, reads: Reads, started_by: str) -> VerifyRun:
    """Start a run, unless one is already running (then that one is returned)."""
    latest = store.latest_run()
    if latest is not None and latest.running:
        return latest
    run = store.start_run(started_by, "starting")
    threading.Thread(
        target=_work, args=(store, reads, run.id), name="pm-ops-console-verify", daemon=True
    ).start()
    log.info("console: verify %s started by token %s", run.id, started_by)
    return run


def _work(store: ConsoleStore, reads: Reads, run_id: str) -> None:
    try:
        report = reads.verify(lambda stage: store.set_stage(run_id, stage))
    except Exception as error:  # the result must say so rather than spin for ever
        log.exception("console: verify %s could not finish", run_id)
        store.finish_run(
            run_id, False, {"error": f"verify could not finish ({type(error).__name__})"}
        )
        return
    result: dict[str, Any] = {
        "notes": report.notes,
        "total": len(report.findings),
        "findings": [
            {"area": f.area, "position": f.position, "message": f.message}
            for f in report.findings[:MAX_FINDINGS]
        ],
    }
    store.finish_run(run_id, report.ok, result)
    log.info("console: verify %s finished: %s", run_id, "OK" if report.ok else "FAILED")


def progress(run: VerifyRun) -> dict[str, Any]:
    step, label = STAGES.get(run.stage, (0, run.stage))
    if run.interrupted:
        label = "Interrupted (the process running it stopped); start it again"
    return {
        "id": run.id,
        "stage": run.stage,
        "label": label,
        "step": step,
        "steps": STEPS,
        "finished": run.finished_at is not None or run.interrupted,
        "ok": run.ok,
    }
