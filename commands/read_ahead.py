"""The store's work in a thread of its own while the caller works on the next item:
the directory import reads its next batch, and a projection its next window of the log
(`in_background`), and the import writes its last batch (`WriteBehind`), while Python
makes the current one. psycopg releases the GIL while it waits, so the store and
Python each keep a core busy."""

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from types import TracebackType
from typing import Any, TypeVar

log = logging.getLogger("pm_ops.write_behind")

T = TypeVar("T")


def in_background(items: Generator[T, None, None]) -> Iterator[T]:
    """The items, made one ahead in a thread of their own; its exception is raised
    here, and stopping early stops (and waits for) the thread."""
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(done: bool, item: Any) -> None:
        while not stop.is_set():
            try:
                ready.put((done, item), timeout=0.1)
                return
            except queue.Full:
                continue

    def make() -> None:
        try:
            for item in items:
                put(False, item)
                if stop.is_set():
                    break
            put(True, None)
        except BaseException as error:  # handed to the consumer, which raises it
            put(True, error)
        finally:
            items.close()

    thread = threading.Thread(target=make, name="pm-ops-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            done, item = ready.get()
            if done:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


class WriteBehind:
    """Writes (each a call that stores something) run one at a time and in order, in a
    thread of its own, while the caller makes the next ones (without `thread`, each is
    run as it is handed over). At most `depth` are handed over and not yet done: the
    next handover waits for the oldest. A failed write is raised at the next handover,
    `drain` or exit, and no write handed over after it runs. If the caller fails, the
    write under way ends and those not yet begun never do."""

    def __init__(self, *, thread: bool, depth: int = 2) -> None:
        self._pool = ThreadPoolExecutor(1, "pm-ops-write-behind") if thread else None
        self._pending: deque[Future[None]] = deque()
        self._depth = depth
        self._failed = False
        self.done = 0  # writes finished: the first `done` handed over are stored

    def submit(self, write: Callable[[], None]) -> None:
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        if self._pool is None:
            self._run(write)
        else:
            self._pending.append(self._pool.submit(self._run, write))

    def drain(self) -> None:
        """Wait until every write handed over is done; raise a write's error."""
        while self._pending:
            self._pending.popleft().result()

    def _run(self, write: Callable[[], None]) -> None:
        if self._failed:  # an earlier write failed: the ones after it must not run
            raise WriteSkipped("an earlier write failed")
        try:
            write()
        except BaseException:
            self._failed = True
            raise
        self.done += 1

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        try:
            if error is None:
                self.drain()
            elif self._pending:  # the caller's error is raised; the write under way ends
                started = [write for write in self._pending if not write.cancel()]
                wait_for(started)
                for failed in filter(None, (write.exception() for write in started)):
                    log.error("a write before this error failed too", exc_info=failed)
        finally:
            if self._pool is not None:
                self._pool.shutdown()


class WriteSkipped(Exception):
    """A write not run because one handed over before it failed."""
