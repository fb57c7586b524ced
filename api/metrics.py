"""Prometheus metrics. A registry per app (no import-time globals); under
serve, PROMETHEUS_MULTIPROC_DIR makes /metrics add up every process.

prometheus_client decides at import whether values live in process memory or in
the shared directory, and `serve` sets that directory only once it runs: so the
library is imported here when metrics are first made, never at module import."""

import os
from typing import Any


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

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
