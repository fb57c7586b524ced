"""Projections: read models and the Slack feed, built from the event log.

- state: memberships and current signup codes;
- audit: one entry per change, with who and why;
- chain: a hash chain over the log, for `pm-ops verify`;
- slack: the #ops-webhooks feed (console sink without SLACK_BOT_TOKEN).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from api.config import Config
from projections.feeds import FEEDS, FeedOff, build_feed
from projections.runner import Runner, make_lock
from projections.store import ViewsMixin, open_views
from projections.tables import DB_PROJECTIONS, TableProjection

log = logging.getLogger("pm_ops.projections")

NAMES = ("state", "audit", "chain", *FEEDS)


class RebuildError(Exception):
    pass


def build_follower(app: Any, config: Config, views: ViewsMixin, name: str, **options: Any) -> Any:
    if name in FEEDS:
        return build_feed(app, config, views, name, **options)
    if name in DB_PROJECTIONS:
        return DB_PROJECTIONS[name](app, views)
    raise ValueError(f"unknown projection {name!r}; choose from {', '.join(NAMES)}")


@dataclass
class RunningProjections:
    app: Any
    runners: list[Runner] = field(default_factory=list)

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop_event.set()
        for runner in self.runners:
            runner.stop()
        self.app.close()

    def runner(self, name: str) -> Runner:
        return next(r for r in self.runners if r.name == name)


def start_projections(
    config: Config,
    names: tuple[str, ...] = NAMES,
    *,
    poll_seconds: float = 0.5,
    standby_seconds: float = 1.0,
    slack_interval: float = 1.0,
    on_lag: Callable[[str, int], None] | None = None,
) -> RunningProjections:
    """Start one runner thread per projection (each active only while it holds
    that projection's lock); returns a handle whose stop() ends them."""
    from api.bootstrap import open_application

    app = open_application(config)
    views = open_views(app, config)
    running = RunningProjections(app)
    for name in names:
        options = {"min_interval": slack_interval} if name == "slack" else {}
        try:
            follower = build_follower(app, config, views, name, **options)
        except FeedOff as off:
            log.info("projection %s: %s", name, off)
            continue
        follower.create()
        running.runners.append(
            Runner(
                config,
                follower,
                poll_seconds=poll_seconds,
                standby_seconds=standby_seconds,
                paused=lambda name=name: views.is_paused(name),
                on_lag=on_lag,
            ).start()
        )
    return running


def catch_up_once(app: Any, config: Config, names: tuple[str, ...]) -> dict[str, int]:
    """Bring projections up to the head of the log, here and now (if no runner is active)."""
    views = open_views(app, config)
    done: dict[str, int] = {}
    for name in names:
        try:
            projection = build_follower(app, config, views, name)
        except FeedOff:
            continue
        projection.create()
        lock = make_lock(config, name)
        if not lock.try_acquire():
            raise RebuildError(f"the {name} projection has an active runner; it is keeping up")
        try:
            done[name] = 0
            while count := projection.catch_up():
                done[name] += count
        finally:
            lock.release()
    return done


def rebuild(
    app: Any,
    config: Config,
    name: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    wait_seconds: float = 30.0,
    accept_current_log: bool = False,
) -> int:
    """Empty one database projection and replay the whole log into it, while the
    API keeps serving. An active runner is asked to stand by (and takes over
    again afterwards); returns the position reached."""
    if name not in DB_PROJECTIONS:
        raise RebuildError(
            f"only {', '.join(DB_PROJECTIONS)} can be rebuilt "
            "(the Slack feed is not replayed: Slack already has those messages)"
        )
    views = open_views(app, config)
    projection: TableProjection = DB_PROJECTIONS[name](app, views)
    projection.create()
    if name == "chain" and not accept_current_log:
        _refuse_to_hide_tampering(app, views, projection)
    views.pause(name, 60)
    lock = make_lock(config, name)
    try:
        deadline = time.monotonic() + wait_seconds
        while not lock.try_acquire():
            if time.monotonic() > deadline:
                raise RebuildError(
                    f"the active {name} runner did not hand over within {wait_seconds:.0f}s"
                )
            time.sleep(0.2)
        try:
            projection.reset()
            heartbeat = time.monotonic()

            def on_batch(position: int) -> None:
                nonlocal heartbeat
                if progress is not None:
                    progress(position, head)
                if time.monotonic() - heartbeat > 10:
                    views.pause(name, 60)
                    heartbeat = time.monotonic()

            while True:  # the API keeps appending: replay until we reach the head
                head = projection.head()
                if projection.position() >= head:
                    break
                projection.catch_up(on_batch=on_batch, head=head)
            return projection.position()
        finally:
            lock.release()
    finally:
        views.resume(name)


def status(app: Any, config: Config) -> list[dict[str, Any]]:
    views = open_views(app, config)
    head = app.recorder.max_notification_id() or 0
    rows = []
    for name in NAMES:
        try:
            follower = build_follower(app, config, views, name)
        except FeedOff as off:
            rows.append(_feed_off(name, str(off), views.position(name), head))
            continue
        follower.create()
        position = follower.position()
        lock = make_lock(config, name)
        running = not lock.try_acquire()
        if not running:
            lock.release()
        rows.append(
            {
                "projection": name,
                "position": position,
                "head": head,
                "lag": max(0, head - position),
                "runner": "active" if running else "none",
                "paused": views.is_paused(name),
                **_feed_failures(follower),
            }
        )
    return rows


def _feed_off(name: str, reason: str, position: int, head: int) -> dict[str, Any]:
    return {
        "projection": name,
        "position": position,
        "head": head,
        "lag": max(0, head - position),
        "runner": reason,
        "paused": False,
    }


def _feed_failures(follower: Any) -> dict[str, Any]:
    """A feed whose destination refuses some changes for good says how many."""
    count = getattr(getattr(follower, "sink", None), "failed_syncs", None)
    return {"failures": count()} if count is not None else {}


def _refuse_to_hide_tampering(app: Any, views: ViewsMixin, chain: Any) -> None:
    """The chain is the evidence that the log is what it was: rebuilding it over an
    altered log would make the alteration the new truth, so say so and stop."""
    from projections.verify import Report, check_chain

    report = Report()
    check_chain(app, views, chain, report)
    if not report.ok:
        shown = "\n  ".join(str(finding) for finding in report.findings[:10])
        raise RebuildError(
            "the hash chain shows the log was altered after it was written; rebuilding it "
            f"would erase that evidence:\n  {shown}\nInvestigate with `pm-ops verify`. To "
            "take the log as it is now as the new baseline, pass --accept-current-log."
        )
