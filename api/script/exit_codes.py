"""The one place that maps an outcome of the script client to the process exit code.

One code per row of the guide's "who handles it" table. `api.client` re-exports the
constants and takes `OpsError.exit_code` from `for_status`, so the Python API, the `--json`
output and the process agree. Nothing here prints or exits: `api/cli/call.py` returns the
code to click.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

EXIT_OK = 0
EXIT_FIX_INPUT = 1  # 400, 404, 409, 413, 415, 422 ...: you fix the input
EXIT_TOKEN = 2  # 401, 403: the token or its permissions: tell engineering
EXIT_SERVER = 3  # 5xx, unreachable, timed out: tell engineering
EXIT_RATE_LIMITED = 4  # still 429 after every retry: slow down and re-run
EXIT_INTERRUPTED = 130  # Ctrl-C: re-run the same command to resume

EXIT_USAGE = EXIT_FIX_INPUT  # bad options are "fix your input"; click's own 2 means a token here
EXIT_NO_TOKEN = EXIT_TOKEN  # neither OPS_TOKEN nor --token

WHO_FIXES = {
    EXIT_FIX_INPUT: "You: read the detail above and fix the input.",
    EXIT_TOKEN: "Tell engineering: the token is invalid, rotated, or lacks this permission.",
    EXIT_SERVER: "Tell engineering: the platform is unreachable or temporarily unhealthy.",
    EXIT_RATE_LIMITED: "Slow down: too many requests in the last minute. Re-run later or lower --rate.",
}


class _Failed(Protocol):
    status: int | None  # None: the server was never reached


class _Batch(Protocol):
    interrupted: bool
    stopped: _Failed | None
    failures: Sequence[object]


def for_status(status: int | None) -> int:
    """A call that failed with this HTTP status (None: the server was never reached)."""
    if status is None or status >= 500:
        return EXIT_SERVER
    if status in (401, 403):
        return EXIT_TOKEN
    if status == 429:
        return EXIT_RATE_LIMITED
    return EXIT_FIX_INPUT


def for_call(error: _Failed | None) -> int:
    """One call: success, or the error it ended with after every retry."""
    return EXIT_OK if error is None else for_status(error.status)


def for_batch(run: _Batch) -> int:
    """A `--from` run: interrupted, stopped at a row, some rows failed, or all done."""
    if run.interrupted:
        return EXIT_INTERRUPTED
    if run.stopped is not None:
        return for_status(run.stopped.status)
    return EXIT_FIX_INPUT if run.failures else EXIT_OK
