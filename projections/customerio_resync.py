"""`pm-ops cio resync`: push people's current values to Customer.io.

For a person whose change Customer.io refused (their refused events are sent again,
with the same ids), or for everyone after enabling the feed on an existing log (the
feed itself does not send the past). Current values come from the log, the same
source as the feed, identified as the person's latest change was.
"""

from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import orjson

from aggregates import Person
from projections.customerio import (
    ANNOUNCED,
    CHANGE_TOPICS,
    Failures,
    Refusal,
    Sync,
    Transient,
    identifier_of,
    profile_of,
    push,
)
from projections.store import ViewsMixin
from projections.track_api import CustomerIOSettings, TrackAPI


def current_sync(app: Any, originator_id: UUID) -> Sync | None:
    """A person's current values, identified as their latest change did (None: the
    person was never changed by a call, so Customer.io has nothing to learn)."""
    stored = app.recorder.select_events(originator_id)
    events = [app.mapper.to_domain_event(item) for item in stored]
    changes = [event for event in events if type(event) in ANNOUNCED]
    if not changes:
        return None
    person = app.repository.get(originator_id)
    last = changes[-1]
    return Sync(
        person.person_id,
        identifier_of(last, person.person_id),
        profile_of(person, last.timestamp),
        None,
    )


def changed_people(app: Any) -> list[UUID]:
    """Everyone a call ever changed, in a stable order (so a resync can resume)."""
    seen: set[UUID] = set()
    start = 1
    while True:
        notes = app.recorder.select_notifications(start, 1000, topics=sorted(CHANGE_TOPICS))
        seen.update(note.originator_id for note in notes)
        if len(notes) < 1000:
            return sorted(seen, key=str)
        start = notes[-1].id + 1


class ResyncError(Exception):
    """Customer.io would not take a resync; the message says why."""


def push_now(
    api: TrackAPI, sync: Sync, *, attempts: int = 6, sleep: Callable[[float], Any]
) -> Refusal | None:
    """push() with retries for a command line: waits out throttling and short outages."""
    for attempt in range(attempts):
        try:
            return push(api, sync)
        except Transient as transient:
            if attempt == attempts - 1:
                raise ResyncError(transient.reason) from None
            delay = transient.retry_after
            sleep(max(transient.min_delay, min(30.0, 0.5 * 2**attempt) if delay is None else delay))
    return None


def resync_person(
    app: Any, views: ViewsMixin, settings: CustomerIOSettings, person_id: int, *, sleep: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Push a person's current values, then the events Customer.io refused before.
    Returns (events re-sent, failures still refused)."""
    failures = Failures(views)
    failures.create()
    sync = current_sync(app, Person.create_id(person_id))
    if sync is None:
        raise ResyncError(f"No change for person {person_id} in the log: nothing to sync.")
    api = TrackAPI(settings)
    try:
        refusal = push_now(api, sync, sleep=sleep)
        if refusal is not None:
            raise ResyncError(
                f"Customer.io refused the profile of person {person_id} "
                f"({refusal.answer.status}): {refusal.answer.text}"
            )
        sent, still = 0, []
        for failed in failures.listed(person_id):
            event = orjson.loads(failed["event"]) if failed["event"] else None
            # the profile was just pushed whole: only the event is missing
            retry = Sync(person_id, failed["identifier"], {}, event, failed["position"])
            refused = push_now(api, retry, sleep=sleep)
            if refused is None:
                failures.resolve(failed["position"])
                sent += 1 if event else 0
            else:
                failures.record(retry, refused)
                still.append(failed)
        return sent, still
    finally:
        api.close()


class ResyncAll:
    """`cio resync --all`: current values of everyone a call changed, resumable (the
    last person done is kept in `ops_cio_resync`, so a second run carries on)."""

    def __init__(self, app: Any, views: ViewsMixin, settings: CustomerIOSettings) -> None:
        self.app = app
        self.views = views
        self.settings = settings
        self.table = views.table("ops_cio_resync")
        Failures(views).create()
        views.create_views(
            [f"CREATE TABLE IF NOT EXISTS {self.table} (name TEXT PRIMARY KEY, after TEXT)"]
        )

    def resume_after(self) -> str | None:
        with self.views.read() as cursor:
            self.views.execute(cursor, f"SELECT after FROM {self.table} WHERE name='all'")
            row = cursor.fetchone()
        return row["after"] if row else None

    def run(
        self, *, restart: bool, sleep: Any, progress: Callable[[int, int], None]
    ) -> Iterator[tuple[Sync, Refusal | None]]:
        after = None if restart else self.resume_after()
        people = changed_people(self.app)
        todo = [uuid for uuid in people if after is None or str(uuid) > after]
        done = len(people) - len(todo)
        progress(done, len(people))
        api = TrackAPI(self.settings)
        try:
            for uuid in todo:
                sync = current_sync(self.app, uuid)
                refusal = push_now(api, sync, sleep=sleep) if sync is not None else None
                self._remember(str(uuid))  # before handing it out: the caller may stop here
                done += 1
                progress(done, len(people))
                if sync is not None:
                    yield sync, refusal
        finally:
            api.close()
        self._forget()

    def _remember(self, after: str) -> None:
        with self.views.write() as cursor:
            self.views.execute(
                cursor,
                f"INSERT INTO {self.table} (name, after) VALUES ('all', %s) "
                "ON CONFLICT (name) DO UPDATE SET after = excluded.after",
                (after,),
            )

    def _forget(self) -> None:
        with self.views.write() as cursor:
            self.views.execute(cursor, f"DELETE FROM {self.table} WHERE name='all'")
