"""The composition root: builds every collaborator from a Config, once, and closes
them all. `serve`, its workers, `projections run` and every CLI command use it."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

from api.config import Config
from api.metrics import Metrics
from api.rate_limit import RateLimiter
from commands import circuit
from commands.application import OpsApplication
from commands.group_commit import GroupCommitter
from commands.handlers import HANDLERS, prefetchers


@dataclass
class Services:
    config: Config
    app: OpsApplication
    committer: GroupCommitter
    rate_limiter: RateLimiter

    @cached_property
    def metrics(self) -> Metrics:
        # Made on first use: prometheus_client must be imported after serve has set
        # its multiprocess directory (see api/metrics.py).
        metrics = Metrics()
        self.committer.on_commit = metrics.batch_size.observe
        return metrics

    def close(self) -> None:
        self.committer.close()
        self.app.close()


def open_application(config: Config, *, create_tables: bool = True) -> OpsApplication:
    env = config.store.eventsourcing_env()
    env["CREATE_TABLE"] = "y" if create_tables else "n"
    return OpsApplication(env=env)


def build_services(config: Config, *, create_tables: bool = True) -> Services:
    app = open_application(config, create_tables=create_tables)
    if config.is_postgres:  # requests fail fast while the store is unreachable
        circuit.install(app.recorder.datastore)  # type: ignore[attr-defined]
    try:
        rate_limiter = RateLimiter(
            app.recorder.datastore,  # type: ignore[attr-defined]
            table=config.store.table("ops_rate_limits"),
        )
        if create_tables:
            rate_limiter.create_table()
    except BaseException:
        app.close()
        raise
    committer = GroupCommitter(app, HANDLERS, prefetchers())
    return Services(config, app, committer, rate_limiter)


@contextmanager
def bootstrap(config: Config, *, create_tables: bool = True) -> Iterator[Services]:
    """Everything built from one Config, closed on the way out whatever happens."""
    services = build_services(config, create_tables=create_tables)
    try:
        yield services
    finally:
        services.close()
