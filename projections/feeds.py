"""The outbound feeds: each a sink on the one follower (projections/feed.py).

A feed is built from the settings the composition root hands to the projections
(an object with `.store` and one settings attribute per feed, e.g. `.slack`).
Adding a feed: a sink class, its settings, and one entry in FEEDS."""

import logging
from collections.abc import Callable
from typing import Any

from projections.checkpoints import CheckpointSettings, Signer, TreeView
from projections.customerio import CustomerIOSink
from projections.feed import Feed, FeedOff, Sink
from projections.slack import SlackSettings, SlackSink, feed_identity, slack_sink
from projections.store import ViewsMixin, open_views
from projections.timestamps import load_roots
from projections.transparency import NoteError, open_note
from projections.witness_stores import (
    DirectoryStore,
    NoteStore,
    S3Store,
    StoreUnavailable,
    parse_s3_url,
)
from projections.witnesses import (
    Alarm,
    CheckpointSource,
    StoreWitness,
    TimestampWitness,
    slack_witness,
)

log = logging.getLogger("pm_ops.feed")


def _slack(app: Any, settings: Any, views: ViewsMixin, **options: Any) -> Sink:
    return slack_sink(settings.slack, settings.store.identity(), **options)


def _customerio(app: Any, settings: Any, views: ViewsMixin, **_: Any) -> Sink:
    if settings.customerio is None:
        raise FeedOff("off: set CIO_SITE_ID and CIO_TRACK_API_KEY to sync Customer.io")
    return CustomerIOSink(app, views, settings.customerio)


# --- the checkpoints' witnesses (they follow the signed checkpoints, not the log) ------


def checkpoint_settings(settings: Any) -> CheckpointSettings:
    if settings.checkpoints is None:
        raise FeedOff("off: set OPS_CHECKPOINT_KEY to sign checkpoints (SPEC §10)")
    return settings.checkpoints


def note_stores(checkpoints: CheckpointSettings) -> dict[str, NoteStore]:
    """The places outside the database that keep the notes, as configured."""
    stores: dict[str, NoteStore] = {}
    if checkpoints.directory:
        stores["directory"] = DirectoryStore(checkpoints.directory)
    if checkpoints.s3_url:
        bucket, prefix = parse_s3_url(checkpoints.s3_url)
        stores["s3"] = S3Store(
            bucket,
            prefix,
            endpoint_url=checkpoints.s3_endpoint,
            retention_days=checkpoints.retention_days,
        )
    return stores


def published_roots(checkpoints: CheckpointSettings) -> dict[int, bytes]:
    """The root of the latest checkpoint each store holds, as our key signed it: what a
    tree built again must agree with (the stores outlive the database)."""
    verifier = Signer(checkpoints.key_path, checkpoints.origin).verifier_key()
    roots: dict[int, bytes] = {}
    for store in note_stores(checkpoints).values():
        try:
            latest = store.latest()
            if latest is not None:
                opened = open_note(latest[1], verifier)
                roots[opened.size] = opened.root
        except (StoreUnavailable, NoteError) as error:  # its own feed raises the alarm
            log.warning("checkpoints: cannot compare with %s: %s", store.where, error)
    return roots


def alarm_of(settings: Any, views: ViewsMixin, **options: Any) -> Alarm:
    """A witness's alarm: the log and the metric, and Slack (the checkpoints' channel, else
    the feed's) when there is a token."""
    checkpoints, slack = checkpoint_settings(settings), settings.slack
    poster = None
    if slack.token:
        channel = checkpoints.slack_channel or slack.channel
        poster = SlackSink(SlackSettings(slack.token, channel, slack.api_url), feed_id="")
    return Alarm(views, poster, options.get("on_alarm"))


def _store_witness(kind: str) -> Callable[..., Sink]:
    def build(app: Any, settings: Any, views: ViewsMixin, **options: Any) -> Sink:
        checkpoints = checkpoint_settings(settings)
        store = note_stores(checkpoints).get(kind)
        if store is None:
            variable = {"directory": "OPS_CHECKPOINT_DIR", "s3": "OPS_CHECKPOINT_S3"}[kind]
            raise FeedOff(f"off: set {variable} to keep checkpoints there")
        signer = Signer(checkpoints.key_path, checkpoints.origin)
        alarm = alarm_of(settings, views, **options)
        return StoreWitness(store, TreeView(views), signer.verifier_key, alarm)

    return build


def _slack_witness(app: Any, settings: Any, views: ViewsMixin, **_: Any) -> Sink:
    checkpoints = checkpoint_settings(settings)
    if not (checkpoints.slack_channel and settings.slack.token):
        raise FeedOff("off: set OPS_CHECKPOINT_SLACK_CHANNEL and SLACK_BOT_TOKEN")
    feed_id = feed_identity(settings.store.identity())
    return slack_witness(settings.slack, checkpoints.slack_channel, feed_id)


def _tsa_witness(app: Any, settings: Any, views: ViewsMixin, **_: Any) -> Sink:
    checkpoints = checkpoint_settings(settings)
    if not checkpoints.tsa_urls:
        raise FeedOff("off: set OPS_TSA_URLS to time-stamp checkpoints")
    roots = load_roots(checkpoints.tsa_roots) if checkpoints.tsa_roots else []
    beside = note_stores(checkpoints).get("directory")
    return TimestampWitness(checkpoints.tsa_urls, roots, views, beside)


FEEDS: dict[str, Callable[..., Sink]] = {
    "slack": _slack,
    "customerio": _customerio,
    "witness-directory": _store_witness("directory"),
    "witness-s3": _store_witness("s3"),
    "witness-slack": _slack_witness,
    "witness-tsa": _tsa_witness,
}
WITNESSES = tuple(name for name in FEEDS if name.startswith("witness-"))


def build_feed(app: Any, settings: Any, views: ViewsMixin, name: str, **options: Any) -> Feed:
    """The follower for one feed; FeedOff when its settings are missing. A witness
    follows the signed checkpoints; every other feed, the log."""
    sink = FEEDS[name](app, settings, views, **options)
    source = CheckpointSource(TreeView(views)) if name in WITNESSES else None
    return Feed(app, views, sink, source)


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
