"""The `--from` run: one call per row, paced, through `api.client` (which retries with the
same key), resumable because every row's key comes from the file (see rows.py).

A "fix your input" answer (404, 409, 422 ...) fails that row and the run goes on; a token
problem, an outage or a persistent 429 would fail every remaining row alike, so the run
stops there. Ctrl-C ends the run as an outcome, not an exception, so the caller can still
write the failed rows and say how to resume.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from api.client import OpsClient, OpsError
from api.script import exit_codes
from api.script.operation import Operation, Result
from api.script.rows import Row, RowFile


@dataclass
class Failure:
    row: Row
    status: str  # "" when the row was never sent
    code: str
    detail: str
    replayed: bool = False  # the stored answer of an earlier run of this same file

    @classmethod
    def invalid(cls, row: Row) -> Failure:
        assert row.problem is not None
        return cls(row, "", "invalid_row", row.problem)

    @classmethod
    def answered(cls, row: Row, error: OpsError) -> Failure:
        return cls(row, str(error.status or ""), error.code, error.detail, error.replayed)


@dataclass
class BatchRun:
    rows: int
    outcomes: Counter[str] = field(default_factory=Counter)  # by outcome, and "replayed"
    failures: list[Failure] = field(default_factory=list)
    stopped: OpsError | None = None  # the error that stopped the run at a row
    interrupted: bool = False
    interrupted_at: int | None = None  # the line being worked on when Ctrl-C came

    @property
    def succeeded(self) -> int:
        return sum(n for name, n in self.outcomes.items() if name != "replayed")


class Observer(Protocol):
    def row_done(self, row: Row, result: Result | None, failure: Failure | None) -> None:
        """A row is finished: succeeded (`result`) or failed (`failure`)."""


class Pacer:
    """Keeps the starts of successive calls at least `interval` seconds apart."""

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = interval
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def per_minute(
        cls,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Pacer:
        return cls(60.0 / rate, clock, sleep)

    def wait(self) -> None:
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
        self._next = max(now, self._next) + self._interval


def run_batch(
    client: OpsClient, operation: Operation, file: RowFile, pacer: Pacer, observer: Observer
) -> BatchRun:
    run = BatchRun(rows=len(file.rows))
    current: Row | None = None
    try:
        for row in file.rows:
            current = row
            if not _run_row(client, operation, file, row, pacer, observer, run):
                break
        current = None
    except KeyboardInterrupt:
        run.interrupted = True
        run.interrupted_at = current.line if current else None
    return run


def _run_row(
    client: OpsClient,
    operation: Operation,
    file: RowFile,
    row: Row,
    pacer: Pacer,
    observer: Observer,
    run: BatchRun,
) -> bool:
    """One row; False when the run must stop here."""
    if row.problem is not None:
        run.failures.append(Failure.invalid(row))
        observer.row_done(row, None, run.failures[-1])
        return True
    assert row.target is not None
    pacer.wait()
    try:
        result = operation.invoke(client, row.target, file.key(operation, row), row.values)
    except OpsError as error:
        if not _fails_only_this_row(error):
            run.stopped = error
            return False
        run.failures.append(Failure.answered(row, error))
        observer.row_done(row, None, run.failures[-1])
        return True
    run.outcomes[result.as_dict()["outcome"]] += 1
    run.outcomes["replayed"] += result.replayed
    observer.row_done(row, result, None)
    return True


def _fails_only_this_row(error: OpsError) -> bool:
    return exit_codes.for_status(error.status) == exit_codes.EXIT_FIX_INPUT
