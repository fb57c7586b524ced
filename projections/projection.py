"""What every database projection shares: following the log in batches, each batch
and its position in one transaction, and rebuilding itself when its layout changes.

A read model (state.py, audit.py, chain.py, activity.py) subclasses
`TableProjection`: its DDL, its `topics`, a `write` that applies one batch of
events in a few set-based statements (`ViewsMixin.execute_rows`), and a VERSION.
The same code follows the log live (small batches) and rebuilds it (large ones),
so a rebuild makes the same rows as following. The version names the layout of
its tables: change a table, raise the version, and the runner that next becomes
active builds new tables beside the old ones from the log and swaps them in
(projections/bluegreen.py; online: the API keeps appending, readers keep the old
tables until the swap, progress goes to the log). Tables written before versions
existed are version 1, the 0.1.0 layout.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError

from commands.library_internals import note_decoder
from projections.log import read_ahead, read_log
from projections.store import StalePosition, ViewsMixin

log = logging.getLogger("pm_ops.projections")

UNVERSIONED = 1  # tables made by 0.1.0, before versions were recorded
PROGRESS_SECONDS = 5.0
LIVE_BATCH = 500  # following: a batch is one short transaction
# After a batch that left it less than a live batch behind, a runner waits this long for
# more events: at a thousand calls a second, spinning on a handful each (the head moves
# while a batch is written) cost the API a tenth of its pace.
GATHER_SECONDS = 0.2
# Rebuilding: per-batch costs (the read, the claim, a statement per table) vanish
# at this size, and a transaction still holds only a fraction of a second's work.
REBUILD_BATCH = 5000


class Halted(Exception):
    """A projection cannot go on, for a reason its message gives whole (no traceback adds
    to it): it is recorded as the projection's fault, and its runner tries again later."""


class LogAltered(Halted):
    """The log is not what it was when its evidence (the hash chain, a signed checkpoint)
    was made: a projection that keeps that evidence never rebuilds over it."""


class Unstorable(Halted):
    """The read model cannot store an event; the message names it and says why."""


class _RolledBack(Exception):
    """Ends a trial write (see TableProjection.diagnose)."""


class TableProjection:
    name = ""
    version = 1
    topics: frozenset[str] | None = None  # None: every event (the chain needs all)
    table_names: tuple[str, ...] = ()  # its own tables, which a rebuild replaces
    live_batch = LIVE_BATCH
    gather_seconds = GATHER_SECONDS

    def __init__(self, app: Any, views: ViewsMixin) -> None:
        self.app = app
        self.views = views
        self.t = views.table
        self._rebuilding_to: int | None = None
        self._reported = 0.0
        self._decoder = note_decoder(app.mapper)  # it decodes log.read_log's light rows
        self._fault_recorded: bool | None = None  # None: unknown until the first batch
        self._interrupted = threading.Event()
        self.check()

    @classmethod
    def follower(cls, app: Any, views: ViewsMixin, settings: Any) -> "TableProjection":
        """The projection as its runner keeps it (some need settings to follow the log)."""
        return cls(app, views)

    def beside(self, views: ViewsMixin) -> "TableProjection":
        """The same read model over `views` opened beside it: what its rebuild builds
        (it follows the log like this one, but never acts outside its tables)."""
        return type(self)(self.app, views)

    # --- what subclasses define --------------------------------------------

    def check(self) -> None:
        """Raise projections.handled.Unhandled unless this read model says what it does
        with every event the domain stores (run whenever it is built: at start-up)."""
        raise NotImplementedError

    def ddl(self) -> list[str]:
        raise NotImplementedError

    def tables(self) -> list[str]:
        return [self.t(name) for name in self.table_names]

    def index(self, base: str, table: str) -> str:
        """The name for index `base` on `table` (one of `table_names`): see
        ViewsMixin.index_name for why an index has two."""
        return self.views.index_name(base, table)

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        """Apply a batch of (position, domain event), in log order, in `cursor`'s
        transaction. Only events of `topics` are given; the others only move the
        position."""
        raise NotImplementedError

    def check_beside(self, live: "TableProjection", *, whole: bool = False) -> None:
        """Called on tables built beside `live` (the projection as readers have it),
        after every batch (cheaply) and before the swap (`whole`: thoroughly): raise
        LogAltered if they disagree with evidence the live ones hold (the chain, the
        checkpoint tree)."""

    # --- layout ---------------------------------------------------------------

    def create(self) -> None:
        """Create the tables if missing. Tables of an older layout are left as they
        are for the runner to rebuild (readers keep reading them meanwhile)."""
        if self.upgrade_pending():
            self.views.create_views([])
            return
        self.views.create_views(self.ddl())
        if self.views.stored_version(self.name) is None:
            self.views.record_version(self.name, self.version)

    def stored_version(self) -> int:
        stored = self.views.stored_version(self.name)
        if stored is not None:
            return stored
        return UNVERSIONED if self.position() > 0 else self.version

    def upgrade_pending(self) -> bool:
        self.views.create_views([])
        return self.stored_version() != self.version

    def on_activate(self) -> None:
        """Called by whoever holds this projection's lock, before following the log:
        tables of an earlier layout are rebuilt beside the live ones and swapped in."""
        if not self.upgrade_pending():
            return
        from projections.bluegreen import upgrade  # it builds on this module

        upgrade(self)

    def interrupt(self) -> None:
        """Asked by a runner that is stopping: a rebuild in progress stops (resumable)."""
        self._interrupted.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    def reset(self) -> None:
        """Drop the tables, create them at this version, forget the position (what a
        rebuild does to the tables it builds beside the live ones)."""
        drops = [f"DROP TABLE IF EXISTS {table}" for table in self.tables()]
        self.views.create_views([])
        self.views.reset(self.name, [*drops, *self.ddl()], self.version)

    # --- following the log ----------------------------------------------------

    def position(self) -> int:
        return self.views.position(self.name)

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def read(self, position: int, stop: int, topics: list[str]) -> list[Any]:
        """The notifications of our topics after `position`, up to `stop`.

        The store filters the topics. Bounding the positions rather than the count
        keeps PostgreSQL's plan cheap whatever its statistics: with none (a big
        import, autovacuum off) it guesses any range holds 0.5 % of the log and
        sorts the whole range, which for "the rest of the log" meant the whole log
        again for every batch; here the range is never more than a batch."""
        return read_log(self.app.recorder, position + 1, stop, topics)

    def decode(self, notes: Sequence[Any]) -> list[tuple[int, Any]]:
        decode = self._decoder
        return [(note.id, decode(note)) for note in notes]

    def process(self, events: list[tuple[int, Any]], expected: int, reached: int) -> None:
        """Apply a batch and record the position it reached, all in one transaction.
        A batch the store refuses for what it holds (not for being unreachable) is
        tried event by event to name the event, which is recorded as this projection's
        fault (`projections status`, `verify`) and raised as Unstorable."""
        try:
            with self.views.write() as cursor:
                self.views.claim(cursor, self.name, expected)
                if events:
                    self.write(cursor, events)
                self.views.advance(cursor, self.name, reached)
        except (StalePosition, LogAltered, OperationalError, InterfaceError):
            raise
        except Exception as error:
            raise Unstorable(self.diagnose(events, error)) from error
        if self._fault_recorded is not False:
            self.views.clear_fault(self.name)
            self._fault_recorded = False

    def halted(self, halt: Halted) -> Halted:
        """Record why this projection cannot go on (`projections status`, `verify`)."""
        self.views.record_fault(self.name, self.position(), str(halt))
        self._fault_recorded = True
        return halt

    def diagnose(self, events: list[tuple[int, Any]], error: Exception) -> str:
        """Which event of a refused batch the store will not take, and why: each is
        written alone in a transaction that is then rolled back."""
        for position, event in events:
            try:
                with self.views.write() as cursor:
                    self.write(cursor, [(position, event)])
                    raise _RolledBack
            except _RolledBack:
                continue
            except Exception as refused:
                return f"cannot store the event at position {position} ({_kind(event)}): {_line(refused)}"
        return f"cannot store the batch after position {events[0][0] - 1 if events else '?'}: {_line(error)}"

    def catch_up(
        self,
        *,
        batch: int | None = None,
        max_batches: int | None = None,
        on_batch: Callable[[int], None] | None = None,
        head: int | None = None,
    ) -> int:
        """Process everything up to the head of the log; returns how many log
        positions were passed (events of other topics included)."""
        head = self.head() if head is None else head
        if batch is None:  # far behind (a first run on an old log): batches of a rebuild's size
            behind = head - self.position() > REBUILD_BATCH
            batch = REBUILD_BATCH if self._rebuilding_to is not None or behind else self.live_batch
        windows: list[tuple[int, int]] = []  # (after, up to): a batch is `batch` positions
        after = self.position()
        while after < head and (max_batches is None or len(windows) < max_batches):
            windows.append((after, min(head, after + batch)))
            after = windows[-1][1]
        done = 0
        batches = self._batches(windows)
        try:
            for (position, reached), events in zip(windows, batches, strict=True):
                try:
                    self.process(events, position, reached)
                except StalePosition as stale:
                    log.info("%s", stale)
                    return done
                except Halted as halt:
                    raise self.halted(halt) from halt
                done += reached - position
                self._report_rebuild(reached)
                if on_batch is not None:
                    on_batch(reached)
        finally:
            batches.close()  # a read still ahead is waited for, not left running
        return done

    def _batches(self, windows: list[tuple[int, int]]) -> Iterator[list[tuple[int, Any]]]:
        """Each window's events of our topics, decoded; on PostgreSQL the next one is
        read and decoded while the store writes this one."""
        topics = sorted(self.topics) if self.topics is not None else []

        def fetch(window: tuple[int, int]) -> list[tuple[int, Any]]:
            return self.decode(self.read(window[0], window[1], topics))

        return read_ahead(fetch, windows, thread=self.views.is_postgres)

    def report_rebuild_to(self, head: int) -> None:
        """Log this projection's progress towards `head` (it is being rebuilt)."""
        self._rebuilding_to = head

    def _report_rebuild(self, position: int) -> None:
        if self._rebuilding_to is None:
            return
        if position >= self._rebuilding_to:
            log.info("projection %s: rebuilt up to position %s", self.name, position)
            self._rebuilding_to = None
        elif time.monotonic() - self._reported > PROGRESS_SECONDS:
            log.info(
                "projection %s: rebuilding, %s of %s events",
                self.name,
                position,
                self._rebuilding_to,
            )
            self._reported = time.monotonic()

    def execute(self, cursor: Any, statement: str, params: Any = ()) -> None:
        self.views.execute(cursor, statement, params)


def _kind(event: Any) -> str:
    """An event's type as people read it (Person.Registered); a stored record's topic."""
    topic = getattr(event, "topic", None)
    return topic.rpartition(":")[2] if isinstance(topic, str) else type(event).__qualname__


def _line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return text or type(error).__name__
