"""The outbound feeds: each a sink on the one follower (projections/feed.py).

A feed is built from the settings the composition root hands to the projections
(an object with `.store` and one settings attribute per feed, e.g. `.slack`).
Adding a feed: a sink class, its settings, and one entry in FEEDS."""

from collections.abc import Callable
from typing import Any

from projections.customerio import CustomerIOSink
from projections.feed import Feed, Sink
from projections.slack import slack_sink
from projections.store import ViewsMixin, open_views


class FeedOff(Exception):
    """The feed is not configured; the message says what to set."""


def _slack(app: Any, settings: Any, views: ViewsMixin, **options: Any) -> Sink:
    return slack_sink(settings.slack, settings.store.identity(), **options)


def _customerio(app: Any, settings: Any, views: ViewsMixin, **_: Any) -> Sink:
    if settings.customerio is None:
        raise FeedOff("off: set CIO_SITE_ID and CIO_TRACK_API_KEY to sync Customer.io")
    return CustomerIOSink(app, views, settings.customerio)


FEEDS: dict[str, Callable[..., Sink]] = {
    "slack": _slack,
    "customerio": _customerio,
}


def build_feed(app: Any, settings: Any, views: ViewsMixin, name: str, **options: Any) -> Feed:
    """The follower for one feed; FeedOff when its settings are missing."""
    return Feed(app, views, FEEDS[name](app, settings, views, **options))


def mark_starts(app: Any, settings: Any, *, create: bool = True) -> None:
    """Each configured feed that does not send the past begins at the head of the log
    as it is now, unless it began earlier (see Feed.mark_start). Every process that
    starts with a feed's settings does this, before it takes any call."""
    views = open_views(app, settings.store)
    for name in FEEDS:
        try:
            feed = build_feed(app, settings, views, name)
        except FeedOff:
            continue
        if feed.sink.from_start:
            continue
        if create:
            feed.create()
        feed.mark_start()
