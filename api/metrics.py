"""Prometheus metrics. A registry per app (no import-time globals); under
serve, PROMETHEUS_MULTIPROC_DIR makes /metrics add up every process.

prometheus_client decides at import whether values live in process memory or in
the shared directory, and `serve` sets that directory only once it runs: so the
library is imported here when metrics are first made, never at module import.

The request path's observations (a request counted, a command timed, a batch sized)
are gathered in memory and handed to prometheus_client at most FLUSH_SECONDS later,
and before every /metrics answer: in multiprocess mode each observation is a locked
write to a memory-mapped file, which cost a tenth of a replay's CPU. A flush writes
each metric once: a counter's total, a histogram's count per bucket and sum. So /metrics
may show another worker's last second a second late; it never loses an observation."""

import atexit
import os
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

FLUSH_SECONDS = 1.0


class Deferred:
    """Observations of one metric child, kept until `flush` hands them over in one go."""

    __slots__ = ("_apply", "_lock", "_pending")

    def __init__(self, apply: Callable[[list[float]], None]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._pending: list[float] = []

    def observe(self, value: float = 1.0) -> None:
        with self._lock:
            self._pending.append(value)

    inc = observe

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            self._apply(pending)


def add_to_counter(child: Any) -> Callable[[list[float]], None]:
    return lambda values: child.inc(sum(values))


def add_to_histogram(child: Any) -> Callable[[list[float]], None]:
    """Many observations written as `observe` writes one: the value's bucket is the
    first whose upper bound it does not exceed, and the sum takes it. prometheus_client
    0.x keeps a child's buckets and sum as values we add to (`_upper_bounds`, `_buckets`,
    `_sum`); a release without them gets each observation the documented way."""
    if not all(hasattr(child, name) for name in ("_upper_bounds", "_buckets", "_sum")):

        def observe_each(values: list[float]) -> None:
            for value in values:
                child.observe(value)

        return observe_each
    bounds, buckets, total = child._upper_bounds, child._buckets, child._sum

    def add(values: list[float]) -> None:
        counts = [0] * len(bounds)
        for value in values:
            counts[bisect_left(bounds, value)] += 1
        for bucket, count in zip(buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        total.inc(sum(values))

    return add


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pm_ops_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.command_seconds = Histogram(
            "pm_ops_command_seconds",
            "Time from command submitted to committed",
            ["operation"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "pm_ops_commit_batch_size",
            "Commands sharing one transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.projection_lag: Any = Gauge(
            "pm_ops_projection_lag",
            "Events in the log not yet processed by a projection",
            ["projection"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",  # one projections process writes it
        )

        self.feed_failures: Any = Gauge(
            "pm_ops_feed_failed_syncs",
            "Changes an outbound feed's destination refused for good (pm-ops cio failures)",
            ["feed"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )

        self.checkpoint_alarms: Any = Counter(
            "pm_ops_checkpoint_alarms",
            "Checkpoints a witness refused because they contradict what it holds",
            ["witness"],
            registry=self.registry,
        )

        self._deferred: dict[tuple[Any, ...], Deferred] = {}
        self._deferred_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()

    def request_counter(self, route: str, status: int) -> Deferred:
        """Counts one request of this route and status per `inc()`."""
        child = self.requests.labels(route, status)
        return self._defer(add_to_counter(child), "requests", route, status)

    def command_timer(self, operation: str) -> Deferred:
        """Times one command of this operation per `observe(seconds)`."""
        child = self.command_seconds.labels(operation)
        return self._defer(add_to_histogram(child), "command", operation)

    def batch_sizes(self) -> Deferred:
        """Sizes one group commit per `observe(size)`."""
        return self._defer(add_to_histogram(self.batch_size), "batch")

    def _defer(self, apply: Callable[[list[float]], None], *key: Any) -> Deferred:
        with self._deferred_lock:
            deferred = self._deferred.get(key)
            if deferred is None:
                deferred = self._deferred[key] = Deferred(apply)
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_every, name="pm-ops-metrics", daemon=True
                )
                self._flusher.start()
                atexit.register(self.flush)  # a worker told to stop keeps its last second
        return deferred

    def flush(self) -> None:
        with self._deferred_lock:
            deferred = list(self._deferred.values())
        for one in deferred:
            one.flush()

    def _flush_every(self) -> None:
        while not self._closed.wait(FLUSH_SECONDS):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self.flush()

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        self.flush()

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
