"""The people import: a million rows in under a minute, in bounded memory.

Each batch is classified by what the store holds, read for the whole batch in one query:
each person's latest email event, and whether each row's email has its index yet. A
person whose email is unchanged (re-running a file) costs nothing more. A new person
whose email no one has yet, and whom no other row of the batch touches, gets its events
from templates (commands/fresh_events.py). Every other row (a changed email, an email
already indexed or shared within the batch, an id twice in the batch) goes through the
aggregates (Person, EmailIndex) as `pm-ops` has always imported it. The batch is then
written in one transaction (commands/bulk.py).

On PostgreSQL three things happen at once: the next batch is parsed and read in one
thread, this one is classified in the caller's, and the one before is written in a
third (psycopg releases the GIL while it waits). A read may miss what the batches
written meanwhile store: a batch that shares a person or an email with one of them is
read again once they are stored, and rows that go through the aggregates wait for
them too."""

from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.utils import get_topic

from aggregates import EmailIndex, Person, normalise_email
from commands.bulk import (
    EventRow,
    aggregate_events,
    decode_state,
    latest_states,
    prepared_write,
)
from commands.fresh_events import NewPersonEvents
from commands.read_ahead import WriteBehind, in_background
from commands.tokens import admin_meta
from commands.unit_of_work import UnitOfWork

IMPORTER = "directory import"
RECENT = 8  # batches remembered; a read is at most four batches behind the writes
T = TypeVar("T")


# A named tuple, not a frozen dataclass: a million-row import makes each row twice (the
# CLI's validation pass, then the import), and a tuple is made three times as fast.
class PersonRow(NamedTuple):
    line: int
    person_id: int
    email: str


@dataclass
class ImportReport:
    created: int = 0
    changed: int = 0
    unchanged: int = 0


@dataclass
class Batch:
    number: int
    rows: list[PersonRow]
    people: list[bytes]  # each row's person id (16 bytes: Person.id_bytes)
    indexes: list[bytes]  # each row's email index id (EmailIndex.id_bytes)
    emails: dict[bytes, str | None]  # the stored people's emails, as read
    indexed: set[bytes]  # which of `indexes` were stored, as read
    written: int  # how many batches had been written when they were read

    def touches(self) -> set[bytes]:
        """The aggregates whose being stored, or whose email, decides this batch's rows."""
        return {*self.people, *self.indexes}


class PeopleImport:
    def __init__(self, app: Application[UUID]) -> None:
        self._app = app
        self._meta = admin_meta(IMPORTER)
        self._new_people = NewPersonEvents(app.mapper, self._meta)
        self._recent: deque[tuple[int, set[bytes]]] = deque(maxlen=RECENT)
        # SQLite's in-memory store is one connection's: no threads there.
        self._threads = isinstance(app.recorder, PostgresAggregateRecorder)
        self._writes = WriteBehind(thread=self._threads)
        # A person's email is the latest of its Registered and EmailChanged; an email's
        # index is stored once it has its Created.
        self._topics = [
            get_topic(event)
            for event in (Person.Registered, Person.EmailChanged, EmailIndex.Created)  # type: ignore[attr-defined]
        ]
        self.report = ImportReport()

    def run(
        self, rows: Iterable[PersonRow], batch_size: int, on_batch: Callable[[int], None] | None
    ) -> ImportReport:
        with self._writes:
            batches = self._read(rows, batch_size)
            if self._threads:
                batches = in_background(batches)
            for batch in batches:
                self._apply(batch)
                if on_batch:
                    on_batch(len(batch.rows))
        return self.report

    def _read(self, rows: Iterable[PersonRow], size: int) -> Generator[Batch, None, None]:
        for number, rows_of_batch in enumerate(batched(rows, size)):
            people = [Person.id_bytes(row.person_id) for row in rows_of_batch]
            indexes = [EmailIndex.id_bytes(row.email) for row in rows_of_batch]
            written = self._writes.done  # before the read: all these batches are in it
            yield Batch(
                number, rows_of_batch, people, indexes, *self._stored(people, indexes), written
            )

    def _stored(
        self, people: list[bytes], indexes: list[bytes]
    ) -> tuple[dict[bytes, str | None], set[bytes]]:
        """Each stored person's email, and which email indexes are stored: one query."""
        states = latest_states(self._app.events, people + indexes, self._topics)
        mapper = self._app.mapper
        emails = {p: decode_state(mapper, states[p])["email"] for p in people if p in states}
        return emails, {index for index in indexes if index in states}

    def _apply(self, batch: Batch) -> None:
        if self._unseen(batch):  # read it again once the batches before it are stored
            self._writes.drain()
            batch.emails, batch.indexed = self._stored(batch.people, batch.indexes)
        fresh: list[tuple[PersonRow, bytes, bytes]] = []
        others: list[PersonRow] = []
        repeated = {person for person, rows in Counter(batch.people).items() if rows > 1}
        for row, person, index in zip(batch.rows, batch.people, batch.indexes, strict=True):
            if person in repeated:  # each row must see the one before: the aggregates do
                others.append(row)
            elif person not in batch.emails:
                fresh.append((row, person, index))
            elif _same_email(batch.emails[person], row.email):
                self.report.unchanged += 1
            else:
                others.append(row)
        events: list[EventRow] = []
        timestamp = self._new_people.timestamp()
        for row, person, index in self._templated(fresh, others, batch):
            events += self._new_people.rows(row.person_id, row.email, person, index, timestamp)
            self.report.created += 1
        if others:  # the aggregates are read from the store: the batches before are in it
            self._writes.drain()
            events += self._through_aggregates(others)
        self._writes.submit(prepared_write(self._app, events))
        self._recent.append((batch.number, batch.touches()))

    def _unseen(self, batch: Batch) -> bool:
        """Whether a batch handed to the writer after this one's read began shares a
        person or an email with it (its writes may be missing from the read)."""
        if batch.written == batch.number:
            return False
        since = [touched for number, touched in self._recent if number >= batch.written]
        if len(since) < batch.number - batch.written:
            return True  # not remembered: read again to be sure
        mine = batch.touches()
        return any(not touched.isdisjoint(mine) for touched in since)

    def _templated(
        self, fresh: list[tuple[PersonRow, bytes, bytes]], others: list[PersonRow], batch: Batch
    ) -> Iterator[tuple[PersonRow, bytes, bytes]]:
        """The new people whose email's index exists nowhere yet and whom no other row
        of the batch touches; the rest join `others`, to go through the aggregates."""
        touched = Counter(index for _, _, index in fresh)
        for row in others:
            touched[EmailIndex.id_bytes(row.email)] += 1
            old = batch.emails.get(Person.id_bytes(row.person_id))
            if old is not None:
                touched[EmailIndex.id_bytes(old)] += 1
        for row, person, index in fresh:
            if touched[index] == 1 and index not in batch.indexed:
                yield row, person, index
            else:
                others.append(row)

    def _through_aggregates(self, rows: list[PersonRow]) -> list[EventRow]:
        uow = UnitOfWork(self._app.repository)
        uow.read_many(Person.create_id(row.person_id) for row in rows)
        uow.read_many(EmailIndex.create_id(row.email) for row in rows)
        for row in rows:
            _import_person(uow, row, self._meta, self.report)
        return list(aggregate_events(self._app.mapper, uow.aggregates()))


def _import_person(
    uow: UnitOfWork, row: PersonRow, meta: dict[str, Any], report: ImportReport
) -> None:
    person = uow.get(Person, Person.create_id(row.person_id))
    if person is None:
        uow.add(Person(person_id=row.person_id, email=row.email, meta=meta))
        _index_email(uow, row.email).add(row.person_id)
        report.created += 1
        return
    old_email = person.email
    if _same_email(old_email, row.email):
        report.unchanged += 1
        return
    person.set_email(row.email, meta=meta)
    if old_email is not None:
        _index_email(uow, old_email).discard(row.person_id)
    _index_email(uow, row.email).add(row.person_id)
    report.changed += 1


def _same_email(stored: str | None, given: str) -> bool:
    return stored is not None and normalise_email(stored) == normalise_email(given)


def _index_email(uow: UnitOfWork, email: str) -> EmailIndex:
    index = uow.get(EmailIndex, EmailIndex.create_id(email))
    if index is None:
        index = EmailIndex(email=email)
        uow.add(index)
    return index


def batched(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch
