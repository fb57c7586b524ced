"""The composition root: builds every collaborator from a Config, once."""

from dataclasses import dataclass

from api.config import Config
from api.metrics import Metrics
from api.rate_limit import RateLimiter
from commands.application import OpsApplication
from commands.group_commit import GroupCommitter
from commands.handlers import HANDLERS, prefetchers


@dataclass
class Services:
    config: Config
    app: OpsApplication
    committer: GroupCommitter
    rate_limiter: RateLimiter
    metrics: Metrics

    def close(self) -> None:
        self.committer.close()
        self.app.close()


def open_application(config: Config, *, create_tables: bool = True) -> OpsApplication:
    env = config.eventsourcing_env()
    env["CREATE_TABLE"] = "y" if create_tables else "n"
    return OpsApplication(env=env)


def build_services(config: Config, *, create_tables: bool = True) -> Services:
    app = open_application(config, create_tables=create_tables)
    rate_limiter = RateLimiter(
        app.recorder.datastore,  # type: ignore[attr-defined]
        table=config.table("ops_rate_limits"),
    )
    if create_tables:
        rate_limiter.create_table()
    metrics = Metrics()

    committer = GroupCommitter(app, HANDLERS, prefetchers(), on_commit=metrics.batch_size.observe)
    return Services(config, app, committer, rate_limiter, metrics)
