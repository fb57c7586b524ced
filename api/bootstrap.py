"""The composition root: builds every collaborator from a Config, once, and closes
them all. `serve`, its workers, `projections run` and every CLI command use it."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from api.config import Config
from api.metrics import Metrics
from api.rate_limit import RateLimiter
from commands import circuit
from commands.application import OpsApplication
from commands.authentication import Authenticator
from commands.circuit import Circuit
from commands.group_commit import GroupCommitter
from commands.handlers import HANDLERS, prefetchers
from commands.library_internals import datastore_of
from commands.sealing import SigningKeys, embedded_secret_key
from projections.feeds import mark_starts
from projections.read_models import ReadModels, open_read_models


@dataclass
class Services:
    config: Config
    app: OpsApplication
    committer: GroupCommitter
    rate_limiter: RateLimiter
    authenticator: Authenticator
    circuit: Circuit | None = None

    @cached_property
    def metrics(self) -> Metrics:
        # Made on first use: prometheus_client must be imported after serve has set
        # its multiprocess directory (see api/metrics.py).
        metrics = Metrics()
        self.committer.on_commit = metrics.batch_sizes().observe
        return metrics

    @cached_property
    def read_models(self) -> ReadModels:
        """The typed views over the projections and the log (made on first use)."""
        return open_read_models(self.app, self.config.store)

    def close(self) -> None:
        self.committer.close()
        if "metrics" in self.__dict__:  # made: hand over what it still holds
            self.metrics.close()
        if self.circuit is not None:
            self.circuit.close()
        self.app.close()


def open_application(config: Config, *, create_tables: bool = True) -> OpsApplication:
    env = config.store.eventsourcing_env()
    env["CREATE_TABLE"] = "y" if create_tables else "n"
    return OpsApplication(env=env, signing_keys=SigningKeys(secret_key(config)))


def secret_key(config: Config) -> str | None:
    """OPS_SECRET_KEY; on the embedded default (one SQLite file), a key file beside it."""
    store = config.store
    if config.secret_key or store.is_postgres or store.is_memory:
        return config.secret_key
    return embedded_secret_key(Path(f"{store.sqlite_path}.secret-key"))


def build_services(config: Config, *, create_tables: bool = True) -> Services:
    app = open_application(config, create_tables=create_tables)
    datastore = datastore_of(app.recorder)  # one pool for everything
    # On PostgreSQL, requests fail fast while the store is unreachable.
    breaker = circuit.install(datastore) if config.is_postgres else None
    try:
        rate_limiter = RateLimiter(datastore, table=config.store.table("ops_rate_limits"))
        if create_tables:
            rate_limiter.create_table()
            from api.console.store import ConsoleStore  # (api.console imports this module)

            ConsoleStore(datastore, config.store).create_tables()
        # A feed that does not send the past (Customer.io) starts here, not when its runner
        # first runs: every change after this process started with its settings reaches it.
        mark_starts(app, config, create=create_tables)
    except BaseException:
        if breaker is not None:
            breaker.close()
        app.close()
        raise
    committer = GroupCommitter(app, HANDLERS, prefetchers())
    authenticator = Authenticator(app, app.signing_keys)
    return Services(config, app, committer, rate_limiter, authenticator, breaker)


@contextmanager
def bootstrap(config: Config, *, create_tables: bool = True) -> Iterator[Services]:
    """Everything built from one Config, closed on the way out whatever happens."""
    services = build_services(config, create_tables=create_tables)
    try:
        yield services
    finally:
        services.close()
