"""The checkpoints' witnesses (SPEC §10): sinks of the one follower (projections/feed.py)
that follow the signed checkpoints instead of the log. Each keeps its own position, the
tree size of the last checkpoint it holds: nothing lost, nothing twice, retried under an
outage while the checkpoints queue in `ops_checkpoints`.

- `StoreWitness`: a place outside the database (witness_stores.py: a directory, S3 under
  Object Lock) keeps each note. Before it takes a note, the last note it holds must be
  signed by our key and be a prefix of the new tree (a consistency proof from our tree,
  checked as an auditor would with transparency.py); otherwise it refuses the note.
- `SlackWitness`: each note in a code block in OPS_CHECKPOINT_SLACK_CHANNEL.
- `TimestampWitness`: RFC 3161 time-stamps of each note from OPS_TSA_URLS, kept in the
  database (`ops_checkpoint_timestamps`) and beside the note in the directory witness.

A witness that refuses a checkpoint raises the alarm: an error in the log, a message in
the checkpoint Slack channel when there is one, the `pm_ops_checkpoint_alarms_total`
metric, and the witness shown stuck by `projections status` and `verify`.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from projections.checkpoints import StoredCheckpoint, TreeView
from projections.feed import Change, DeliveryFailed, describe
from projections.merkle import consistency_proof, tree_root
from projections.slack import SlackSettings, SlackSink
from projections.store import ViewsMixin
from projections.times import iso
from projections.timestamps import TimestampError, request_timestamp, verify_timestamp
from projections.transparency import NoteError, ProofError, open_note, verify_consistency
from projections.witness_stores import Contradiction, NoteStore, StoreUnavailable

log = logging.getLogger("pm_ops.feed")

REFUSED_DELAY = 60.0  # a contradiction needs a person: try again seldom
CHECKPOINT_EVENT_TYPE = "pm_ops_checkpoint"


class CheckpointSource:
    """The signed checkpoints, numbered by tree size: what the witnesses follow."""

    def __init__(self, tree: TreeView) -> None:
        self.tree = tree

    def head(self) -> int:
        return self.tree.head()

    def changes(self, after: int, limit: int, stop: int, topics: frozenset[str]) -> list[Change]:
        return [
            Change(checkpoint.size, checkpoint)
            for checkpoint in self.tree.checkpoints(after=after, limit=limit)
            if checkpoint.size <= stop
        ]


@dataclass
class Alarm:
    """How a witness's refusal is made known: log, Slack (if set), metric, fault row."""

    views: ViewsMixin
    slack: SlackSink | None = None
    on_alarm: Callable[[str], None] | None = None
    raised: set[tuple[str, int]] = field(default_factory=set)

    def __call__(self, witness: str, size: int, reason: str) -> None:
        said = f"witness {witness} refuses the checkpoint of size {size}: {reason}"
        self.views.record_fault(witness, size, said)
        if (witness, size) in self.raised:
            return  # once per checkpoint and process, however often it is retried
        self.raised.add((witness, size))
        log.error("ALARM: %s", said)
        if self.on_alarm is not None:
            self.on_alarm(witness)
        if self.slack is not None:
            try:
                self.slack.poster.chat_postMessage(
                    channel=self.slack.channel, text=f":rotating_light: pm-ops checkpoint {said}"
                )
            except Exception as error:  # the alarm is in the log and the metric already
                log.warning("could not post the alarm to Slack (%s)", describe(error))


class WitnessBase:
    """What every witness shares: it follows checkpoints, from the first one."""

    topics: frozenset[str] = frozenset()
    from_start = True
    min_interval = 0.0
    max_batch = 20

    def create(self) -> None:
        pass


class StoreWitness(WitnessBase):
    def __init__(self, store: NoteStore, tree: TreeView, verifier_key: str, alarm: Alarm) -> None:
        self.store = store
        self.tree = tree
        self.verifier_key = verifier_key
        self.alarm = alarm
        self.name = f"witness-{store.name}"

    def recover(self) -> int | None:
        """The size of the last checkpoint held, once it is known to agree with our tree
        (a witness holding another history raises the alarm instead of being skipped)."""
        latest = self.store.latest()
        if latest is None:
            return None
        size, note = latest
        try:
            held = open_note(note, self.verifier_key())
        except NoteError as error:
            return self.refused_held(
                size, f"the note it holds for size {size} is not ours ({error})"
            )
        with self.tree.views.read() as cursor:
            tree_size = self.tree.size(cursor)
            if tree_size < size:
                return self.refused_held(
                    size,
                    f"it holds a checkpoint of size {size} but the tree has only {tree_size} "
                    "events: the database is behind what was published",
                )
            root = tree_root(size, self.tree.reader(cursor))
        if root != held.root:
            return self.refused_held(
                size, f"the checkpoint of size {size} it holds has another root than the log's"
            )
        return size

    def refused_held(self, size: int, reason: str) -> int:
        self.alarm(self.name, size, reason)
        raise DeliveryFailed(f"the checkpoint of size {size} it holds: {reason}")

    def deliver(self, changes: list[Change], first: int, last: int) -> None:
        accepted: int | None = None
        for change in changes:
            checkpoint: StoredCheckpoint = change.event
            try:
                self.admit(checkpoint)
                self.store.put(checkpoint.size, checkpoint.note)
            except StoreUnavailable as error:
                raise DeliveryFailed(str(error), accepted=accepted) from None
            except Contradiction:
                self.refuse(checkpoint, "it holds another note of that size", accepted)
            accepted = change.position
        self.views_clear()

    def admit(self, checkpoint: StoredCheckpoint) -> None:
        """Refuse a checkpoint that does not extend the last one this witness holds."""
        held = self.store.latest()
        if held is None:
            return
        size, note = held
        try:
            mine = open_note(note, self.verifier_key())
        except NoteError as error:
            self.refuse(checkpoint, f"the note it holds for size {size} is not ours ({error})")
        if size > checkpoint.size:
            self.refuse(
                checkpoint,
                f"it already holds a checkpoint of size {size}: the database is behind what "
                "was published (restored from an older backup, or rolled back)",
            )
        if size == checkpoint.size:
            return  # the same bytes are taken quietly; other bytes are a Contradiction
        with self.tree.views.read() as cursor:
            proof = consistency_proof(size, checkpoint.size, self.tree.reader(cursor))
        try:
            verify_consistency(size, checkpoint.size, mine.root, checkpoint.root, proof)
        except ProofError:
            self.refuse(
                checkpoint,
                f"the tree of {checkpoint.size} events does not extend the checkpoint of "
                f"size {size} it holds: the log was rewritten since that was signed",
            )

    def refuse(
        self, checkpoint: StoredCheckpoint, reason: str, accepted: int | None = None
    ) -> None:
        self.alarm(self.name, checkpoint.size, reason)
        raise DeliveryFailed(
            f"refused the checkpoint of size {checkpoint.size}: {reason}",
            accepted=accepted,
            min_delay=REFUSED_DELAY,
        )

    def views_clear(self) -> None:
        self.alarm.views.clear_fault(self.name)


class SlackWitness(SlackSink):
    """Each checkpoint's note in a code block, in its own channel."""

    name = "witness-slack"
    topics: frozenset[str] = frozenset()
    from_start = True
    max_batch = 1  # a note a message
    event_type = CHECKPOINT_EVENT_TYPE

    def message(self, changes: list[Change], first: int, last: int) -> dict[str, Any] | None:
        checkpoint: StoredCheckpoint = changes[-1].event
        text = checkpoint.note.decode()
        return {
            "text": f"pm-ops checkpoint: the log's first {checkpoint.size} events",
            "blocks": [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*Signed checkpoint*\n```{text}```"},
                }
            ],
            "metadata": {
                "event_type": CHECKPOINT_EVENT_TYPE,
                "event_payload": {"feed": self.feed_id, "first": first, "last": last},
            },
            "unfurl_links": False,
            "unfurl_media": False,
        }


def slack_witness(settings: SlackSettings, channel: str, feed_id: str) -> SlackWitness:
    return SlackWitness(
        SlackSettings(settings.token, channel, settings.api_url), feed_id, min_interval=1.0
    )


class TimestampWitness(WitnessBase):
    """RFC 3161 time-stamps of each note, from every authority in OPS_TSA_URLS."""

    name = "witness-tsa"

    def __init__(
        self,
        urls: tuple[str, ...],
        roots: list[Any],
        views: ViewsMixin,
        beside: NoteStore | None = None,
    ) -> None:
        self.urls = urls
        self.roots = roots
        self.views = views
        self.beside = beside
        self.table = views.table("ops_checkpoint_timestamps")

    def create(self) -> None:
        blob = "BYTEA" if self.views.is_postgres else "BLOB"
        self.views.create_views(
            [
                f"CREATE TABLE IF NOT EXISTS {self.table} (size BIGINT NOT NULL, "
                f"authority TEXT NOT NULL, token {blob} NOT NULL, stamped_at TEXT NOT NULL, "
                "PRIMARY KEY (size, authority))"
            ]
        )

    def recover(self) -> int | None:
        with self.views.read() as cursor:
            self.views.execute(cursor, f"SELECT MAX(size) AS top FROM {self.table}")
            row = cursor.fetchone()
        return None if row is None or row["top"] is None else int(row["top"])

    def deliver(self, changes: list[Change], first: int, last: int) -> None:
        accepted: int | None = None
        for change in changes:
            checkpoint: StoredCheckpoint = change.event
            for number, url in enumerate(self.urls):
                try:
                    self.stamp(checkpoint, number, url)
                except (TimestampError, StoreUnavailable) as error:
                    raise DeliveryFailed(str(error), accepted=accepted) from None
            accepted = change.position

    def stamp(self, checkpoint: StoredCheckpoint, number: int, url: str) -> None:
        if self.held(checkpoint.size, url):
            return
        token = request_timestamp(url, checkpoint.note)
        stamped = verify_timestamp(token, checkpoint.note, self.roots) if self.roots else None
        if self.beside is not None:
            self.beside.put_extra(checkpoint.size, f"tsr.{number}", token)
        with self.views.write() as cursor:
            self.views.execute(
                cursor,
                f"INSERT INTO {self.table} (size, authority, token, stamped_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (size, authority) DO NOTHING",
                (checkpoint.size, url, token, iso(stamped or datetime.now(UTC))),
            )

    def held(self, size: int, url: str) -> bool:
        with self.views.read() as cursor:
            self.views.execute(
                cursor,
                f"SELECT 1 FROM {self.table} WHERE size = %s AND authority = %s",
                (size, url),
            )
            return cursor.fetchone() is not None

    def stamps(self, size: int) -> list[tuple[str, bytes, str]]:
        """(authority, token, when) of each time-stamp of a checkpoint."""
        with self.views.read() as cursor:
            self.views.execute(
                cursor,
                f"SELECT authority, token, stamped_at FROM {self.table} WHERE size = %s "
                "ORDER BY authority",
                (size,),
            )
            return [(r["authority"], bytes(r["token"]), r["stamped_at"]) for r in cursor.fetchall()]
