"""Group commit: many concurrent commands share one transaction.

The PostgreSQL recorder locks the events table for every insert, so one
transaction per request caps a process at a few hundred writes a second.
Request threads hand their command to one committer thread per process; it
runs whatever has queued up through the handlers in one unit of work (so two
commands for one person see each other, in arrival order) and writes all their
events and delivery records in one transaction (commands/bulk.py: one COPY under
the recorder's lock). A replay never gets here: the request thread answers it
from the delivery record it read. A version clash with another
process retries the batch on fresh aggregates; a batch that keeps clashing is
split so one hot command cannot starve the others.
"""

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError

from commands.bulk import aggregate_events, write_events
from commands.fresh_events import DeliveryRecords
from commands.messages import Command, Outcome
from commands.unit_of_work import RecordedDelivery, UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[Command, UnitOfWork], Outcome]
# Reads in the request thread; an outcome it returns (a replay) answers without a write.
Prefetcher = Callable[[Command, UnitOfWork], Outcome | None]
SAVED_VERSIONS_LIMIT = 50_000


class Unavailable(Exception):
    """The store could not be reached or kept clashing; safe to retry."""


@dataclass
class _Ticket:
    command: Command
    seed: dict[UUID, Aggregate | None] = field(default_factory=dict)
    outcome: Outcome | None = None
    error: BaseException | None = None
    settled: bool = False
    # Held until settled. A bare lock, not a threading.Event: an Event is a Python
    # Condition, and setting one per call cost a twentieth of a new call's CPU.
    _pending: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._pending.acquire()

    def settle(self, outcome: Outcome | None = None, error: BaseException | None = None) -> None:
        if self.settled:  # the first answer stands (an Event's set() was as forgiving)
            return
        self.outcome, self.error, self.settled = outcome, error, True
        self._pending.release()

    def wait(self) -> None:
        self._pending.acquire()


class GroupCommitter:
    def __init__(
        self,
        app: Application,
        handlers: dict[type, Handler],
        prefetchers: dict[type, Prefetcher] | None = None,
        *,
        max_batch: int = 200,
        attempts: int = 5,
        on_commit: Callable[[int], None] | None = None,  # told each batch size
    ) -> None:
        self._app = app
        self._handlers = handlers
        self._prefetchers = prefetchers or {}
        # Versions this committer wrote, so a seed read before that write is dropped.
        self._saved_versions: dict[UUID, int] = {}
        self._max_batch = max_batch
        self._attempts = attempts
        self.on_commit = on_commit
        self._deliveries = DeliveryRecords(app.mapper)  # the template of delivery records
        self._queue: queue.SimpleQueue[_Ticket | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, command: Command) -> Outcome:
        """Run the command; returns once its events are committed (or raises)."""
        ticket = _Ticket(command)
        prefetcher = self._prefetchers.get(type(command))
        if prefetcher is not None:
            # Reads happen here, in the request thread, in parallel with other requests.
            reads = UnitOfWork(self._app.repository)
            if (answered := prefetcher(command, reads)) is not None:
                return answered
            ticket.seed = reads.loaded()
        self._ensure_started()
        self._queue.put(ticket)
        ticket.wait()
        if ticket.error is not None:
            raise ticket.error
        assert ticket.outcome is not None
        return ticket.outcome

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=10)
                self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="pm-ops-group-commit", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                self._commit(batch)
            except BaseException as error:  # never leave a request thread waiting
                log.exception("group commit failed")
                for ticket in batch:
                    if not ticket.settled:
                        ticket.settle(error=error)

    def _commit(self, batch: list[_Ticket], seeded: bool = True) -> None:
        # Prefetched copies serve the first attempt only: a handler mutates what it
        # is given, so after any failed attempt they no longer show the stored state.
        for attempt in range(self._attempts):
            seed = self._seed(batch) if seeded else None
            uow = UnitOfWork(self._app.repository, seed, self._deliveries)
            seeded = False
            outcomes: list[Outcome] = []
            try:
                for ticket in batch:
                    outcomes.append(self._handlers[type(ticket.command)](ticket.command, uow))
            except PersistenceError as error:
                return self._fail(batch, error)
            except Exception as error:
                # A handler bug: fail only the offending command, retry the rest.
                bad = batch[len(outcomes)]
                log.exception("handler failed for %s", type(bad.command).__name__)
                bad.settle(error=error)
                rest = [t for t in batch if t is not bad]
                return self._commit(rest, seeded=False) if rest else None
            recorded = uow.recorded_deliveries()
            rows = list(aggregate_events(self._app.mapper, uow.aggregates()))
            rows += [delivery.row for delivery in recorded]  # after the events they record
            try:
                write_events(self._app, rows)
            except IntegrityError:
                # Another process changed one of these aggregates first.
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
                continue
            except PersistenceError as error:
                return self._fail(batch, error)
            self._remember_versions(uow.aggregates(), recorded)
            if self.on_commit:
                self.on_commit(len(batch))
            for ticket, outcome in zip(batch, outcomes, strict=True):
                ticket.settle(outcome)
            return None
        if len(batch) > 1:
            for ticket in batch:
                self._commit([ticket], seeded=False)
            return None
        return self._fail(batch, Unavailable("the command kept clashing with concurrent writes"))

    def _seed(self, batch: list[_Ticket]) -> dict[UUID, Aggregate | None]:
        """The freshest prefetched copy of each aggregate; anything older than what
        this committer has since written is left out (and read again)."""
        seed: dict[UUID, Aggregate | None] = {}
        for ticket in batch:
            for aggregate_id, aggregate in ticket.seed.items():
                saved = self._saved_versions.get(aggregate_id)
                version = aggregate.version if aggregate is not None else 0
                if saved is not None and version < saved:
                    continue
                current = seed.get(aggregate_id)
                if aggregate_id not in seed or (current.version if current else 0) < version:
                    seed[aggregate_id] = aggregate
        return seed

    def _remember_versions(
        self, aggregates: list[Aggregate], recorded: list[RecordedDelivery]
    ) -> None:
        if len(self._saved_versions) > SAVED_VERSIONS_LIMIT:
            self._saved_versions.clear()
        for aggregate in aggregates:
            self._saved_versions[aggregate.id] = aggregate.version
        for delivery in recorded:
            self._saved_versions[delivery.id] = delivery.version

    @staticmethod
    def _fail(batch: list[_Ticket], error: BaseException) -> None:
        log.warning("store unavailable: %s", type(error).__name__)
        for ticket in batch:
            ticket.settle(
                error=Unavailable(str(error)) if not isinstance(error, Unavailable) else error
            )
