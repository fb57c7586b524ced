"""Projections: read models and the outbound feeds, built from the event log.

- state: memberships and current signup codes (state.py);
- audit: one entry per change, with who and why (audit.py);
- chain: a hash chain over the log, for `pm-ops verify` (chain.py);
- activity: calls by hour and outcome, refused calls, for the auditors' console (activity.py);
- checkpoints: the log's Merkle tree and its signed checkpoints (checkpoints.py);
- slack: the #ops-webhooks feed (console sink without SLACK_BOT_TOKEN);
- customerio: Customer.io's profile sync (customerio.py);
- witness-*: the places signed checkpoints are handed to (witnesses.py).

Nothing here reads the environment or imports api/: the composition root
(api/bootstrap.py) passes in the application and `settings` — anything with a
`store` (commands.store.Store) and the feeds' settings (slack_bot_token, ...).
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from commands.store import Store
from projections.bluegreen import BlueGreen, RebuildStatus, rebuilds
from projections.chain import LogAltered
from projections.feed import Feed
from projections.feeds import FEEDS, WITNESSES, FeedOff, build_feed
from projections.projection import Halted, TableProjection
from projections.read_models import DB_PROJECTIONS
from projections.runner import Runner, make_lock
from projections.store import ViewsMixin, open_views

log = logging.getLogger("pm_ops.projections")


class Settings(Protocol):
    """What projections need from configuration (api.config.Config has it)."""

    @property
    def store(self) -> Store: ...


class RebuildError(Exception):
    pass


ONCE_FEED_SECONDS = 30.0  # `projections run --once`: how long a feed keeps retrying


def _none() -> None:
    """Nothing to interrupt: a database projection never waits on a destination."""


NAMES = (*DB_PROJECTIONS, *FEEDS)


def build_follower(
    app: Any, settings: Settings, views: ViewsMixin, name: str, **options: Any
) -> Any:
    """The follower for one projection or feed (FeedOff when a feed is not configured)."""
    if name in FEEDS:
        return build_feed(app, settings, views, name, **options)
    if name in DB_PROJECTIONS:
        return DB_PROJECTIONS[name].follower(app, views, settings)
    raise ValueError(f"unknown projection {name!r}; choose from {', '.join(NAMES)}")


@dataclass
class RunningProjections:
    app: Any
    runners: list[Runner] = field(default_factory=list)
    owns_app: bool = False

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop_event.set()
        for runner in self.runners:
            runner.stop()
        if self.owns_app:
            self.app.close()

    def runner(self, name: str) -> Runner:
        return next(r for r in self.runners if r.name == name)


def start_projections(
    settings: Settings,
    names: tuple[str, ...] = NAMES,
    *,
    app: Any = None,
    poll_seconds: float = 0.5,
    standby_seconds: float = 1.0,
    slack_interval: float = 1.0,
    on_lag: Callable[[str, int], None] | None = None,
    on_alarm: Callable[[str], None] | None = None,
) -> RunningProjections:
    """Start one runner thread per projection (each active only while it holds
    that projection's lock); returns a handle whose stop() ends them. A runner
    that becomes active first rebuilds its projection if the tables are of an
    earlier layout version."""
    owns_app = app is None
    if owns_app:
        # Only for callers written before the composition root passed `app` (the feed's
        # tests); closed on stop(). Remove once every caller passes app=.
        from commands.application import OpsApplication

        app = OpsApplication(env=settings.store.eventsourcing_env())
    views = open_views(app, settings.store)
    running = RunningProjections(app, owns_app=owns_app)
    for name in names:
        options: dict[str, Any] = {}
        if name == "slack":
            options = {"min_interval": slack_interval}
        elif name in WITNESSES:
            options = {"on_alarm": on_alarm}
        try:
            follower = build_follower(app, settings, views, name, **options)
        except FeedOff as off:
            log.info("projection %s: %s", name, off)
            continue
        follower.create()
        running.runners.append(
            Runner(
                settings.store,
                follower,
                poll_seconds=poll_seconds,
                standby_seconds=standby_seconds,
                paused=lambda name=name: views.is_paused(name),
                on_lag=on_lag,
            ).start()
        )
    return running


def catch_up_once(app: Any, settings: Settings, names: tuple[str, ...]) -> dict[str, int]:
    """Bring projections up to the head of the log, here and now (if no runner is
    active), rebuilding first any whose tables are of an earlier layout."""
    views = open_views(app, settings.store)
    done: dict[str, int] = {}
    for name in names:
        try:
            projection = build_follower(app, settings, views, name)
        except FeedOff:
            continue
        projection.create()
        lock = make_lock(settings.store, name)
        if not lock.try_acquire():
            raise RebuildError(f"the {name} projection has an active runner; it is keeping up")
        try:
            activate = getattr(projection, "on_activate", None)
            if activate is not None:
                try:
                    activate()
                except LogAltered as error:
                    raise RebuildError(str(error)) from None
            done[name] = 0
            # A feed whose destination is down retries for ever under a runner; here it
            # gives up after a while (what it did not deliver waits for the next run).
            interrupt = projection.interrupt if isinstance(projection, Feed) else _none
            deadline = threading.Timer(ONCE_FEED_SECONDS, interrupt)
            deadline.daemon = True
            deadline.start()
            try:
                while count := projection.catch_up():
                    done[name] += count
            finally:
                deadline.cancel()
        except Halted as error:
            raise RebuildError(str(error)) from None
        finally:
            lock.release()
    return done


def rebuild(
    app: Any,
    settings: Settings,
    name: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    wait_seconds: float = 30.0,
    accept_current_log: bool = False,
) -> int:
    """Replay the whole log into new tables beside one database projection's, then swap
    them in at once (projections/bluegreen.py), while the API keeps serving and readers
    keep reading the live tables; returns the position swapped in. An active runner keeps
    the live tables current meanwhile, stands by for the swap, and carries on after it."""
    if name not in DB_PROJECTIONS:
        raise RebuildError(
            f"only {', '.join(DB_PROJECTIONS)} can be rebuilt "
            "(the Slack feed is not replayed: Slack already has those messages)"
        )
    views = open_views(app, settings.store)
    try:
        live = build_follower(app, settings, views, name)  # the tree checks the witnesses
    except FeedOff:
        live = DB_PROJECTIONS[name](app, views)
    live.create()
    rebuilding = BlueGreen(live, check=not accept_current_log, progress=progress)
    try:
        position = rebuilding.run(stand_by_seconds=wait_seconds)
    except LogAltered as error:
        baseline = " To take the log as it is now as the new baseline, pass --accept-current-log."
        raise RebuildError(f"{error}{baseline if name == 'chain' else ''}") from None
    except Halted as error:
        raise RebuildError(str(error)) from None
    assert position is not None  # only a runner's rebuild is stopped half-way
    return position


def rebuildable(app: Any, settings: Settings) -> list[str]:
    """The database projections this configuration keeps (`rebuild --all`): the
    checkpoint tree only with a signing key."""
    views = open_views(app, settings.store)
    names = []
    for name in DB_PROJECTIONS:
        try:
            build_follower(app, settings, views, name)
        except FeedOff:
            continue
        names.append(name)
    return names


def status(app: Any, settings: Settings) -> list[dict[str, Any]]:
    views = open_views(app, settings.store)
    head = app.recorder.max_notification_id() or 0
    views.create_views([])
    faults = views.faults()
    building = rebuilds(app, views)
    rows = []
    for name in NAMES:
        try:
            follower = build_follower(app, settings, views, name)
        except FeedOff as off:
            rows.append(_feed_off(name, str(off), views.position(name), head))
            continue
        follower.create()
        position, own_head = follower.position(), follower.head()  # a witness's: checkpoints
        lock = make_lock(settings.store, name)
        running = not lock.try_acquire()
        if not running:
            lock.release()
        table = isinstance(follower, TableProjection)
        rows.append(
            {
                "projection": name,
                "position": position,
                "head": own_head,
                "lag": max(0, own_head - position),
                "runner": "active" if running else "none",
                "paused": views.is_paused(name),
                "version": follower.stored_version() if table else None,
                "code_version": follower.version if table else None,
                "rebuild_pending": follower.upgrade_pending() if table else False,
                "stuck": faults[name].reason if name in faults else None,
                **_feed_failures(follower),
            }
        )
        if name in building:
            rows.append(_rebuild_row(building[name], follower))
    return rows


def _rebuild_row(rebuild: RebuildStatus, follower: TableProjection) -> dict[str, Any]:
    """A rebuild beside a projection, on a line of its own."""
    return {
        "projection": f"{rebuild.name} (rebuild)",
        "rebuild_of": rebuild.name,
        "position": rebuild.position,
        "head": rebuild.head,
        "lag": max(0, rebuild.head - rebuild.position),
        "runner": rebuild.describe(),
        "paused": False,
        "version": follower.version,
        "code_version": follower.version,
        "rebuild_pending": False,
        "stuck": None,
        "running": rebuild.running,
        "rate": round(rebuild.rate, 1) if rebuild.rate is not None else None,
        "eta_seconds": round(rebuild.eta_seconds, 1) if rebuild.eta_seconds is not None else None,
    }


def _feed_off(name: str, reason: str, position: int, head: int) -> dict[str, Any]:
    # An unconfigured feed has nothing waiting: enabled later, it starts from the head
    # (its history is pushed by a resync), so it never shows as lagging.
    return {
        "projection": name,
        "position": position,
        "head": head,
        "lag": 0,
        "runner": reason,
        "paused": False,
        "version": None,
        "code_version": None,
        "rebuild_pending": False,
        "stuck": None,
    }


def _feed_failures(follower: Any) -> dict[str, Any]:
    """A feed whose destination refuses some changes for good says how many."""
    count = getattr(getattr(follower, "sink", None), "failed_syncs", None)
    return {"failures": count()} if count is not None else {}
