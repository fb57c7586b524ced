"""Prometheus metrics. A registry per app (no import-time globals); under
gunicorn, PROMETHEUS_MULTIPROC_DIR makes /metrics add up every worker."""

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)


class Metrics:
    def __init__(self) -> None:
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
        self.projection_lag = Gauge(
            "pm_ops_projection_lag",
            "Events in the log not yet processed by a projection",
            ["projection"],
            registry=self.registry,
            multiprocess_mode="max",
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
