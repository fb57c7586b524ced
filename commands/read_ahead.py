"""Making the next item in a thread of its own while the caller works on this one: the
directory import reads its next batch, and a projection its next window of the log,
while the store writes the current one (psycopg releases the GIL while it waits, so
the store and Python each keep a core busy)."""

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

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
