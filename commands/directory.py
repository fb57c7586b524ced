"""The directory import: the people and communities the operations refer to.

Rows arrive validated (the CLI refuses a bad file whole, with line numbers);
each batch is read in two queries (its people, then their emails' indexes) and written
in one transaction (one COPY under the recorder's lock); re-running is a no-op; a changed email is an
EmailChanged event that moves the person between email indexes in the same save."""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application

from aggregates import Community, EmailIndex, Person, normalise_email
from commands.bulk import write_aggregates
from commands.tokens import admin_meta
from commands.unit_of_work import UnitOfWork

IMPORTER = "directory import"


@dataclass(frozen=True)
class PersonRow:
    line: int
    person_id: int
    email: str


@dataclass(frozen=True)
class CommunityRow:
    line: int
    community_id: int
    name: str


@dataclass
class ImportReport:
    created: int = 0
    changed: int = 0
    unchanged: int = 0


Row = TypeVar("Row", PersonRow, CommunityRow)


class DirectoryCommands(Application[UUID]):
    """Mixed into OpsApplication: `pm-ops directory import` and `demo`."""

    def import_people(
        self,
        rows: Iterable[PersonRow],
        batch_size: int = 1000,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        def read(uow: UnitOfWork, batch: list[PersonRow]) -> None:
            uow.read_many(Person.create_id(row.person_id) for row in batch)
            uow.read_many(EmailIndex.create_id(row.email) for row in batch)

        return self._import(rows, batch_size, on_batch, read, _import_person)

    def import_communities(
        self,
        rows: Iterable[CommunityRow],
        batch_size: int = 1000,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        def read(uow: UnitOfWork, batch: list[CommunityRow]) -> None:
            uow.read_many(Community.create_id(row.community_id) for row in batch)

        return self._import(rows, batch_size, on_batch, read, _import_community)

    def _import(
        self,
        rows: Iterable[Row],
        batch_size: int,
        on_batch: Callable[[int], None] | None,
        read: Callable[[UnitOfWork, list[Row]], None],
        apply: Callable[[UnitOfWork, Row, dict[str, Any], ImportReport], None],
    ) -> ImportReport:
        """One transaction a batch: its aggregates read in a query or two, then written
        in one statement (commands/bulk.py)."""
        report = ImportReport()
        meta = admin_meta(IMPORTER)
        for batch in _batched(rows, batch_size):
            uow = UnitOfWork(self.repository)
            read(uow, batch)
            for row in batch:
                apply(uow, row, meta, report)
            write_aggregates(self, uow.aggregates())
            if on_batch:
                on_batch(len(batch))
        return report


def _import_community(
    uow: UnitOfWork, row: CommunityRow, meta: dict[str, Any], report: ImportReport
) -> None:
    community = uow.get(Community, Community.create_id(row.community_id))
    if community is None:
        uow.add(Community(community_id=row.community_id, name=row.name, meta=meta))
        report.created += 1
    elif community.name != row.name:
        community.rename(row.name, meta=meta)
        report.changed += 1
    else:
        report.unchanged += 1


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
    if old_email is not None and normalise_email(old_email) == normalise_email(row.email):
        report.unchanged += 1
        return
    person.set_email(row.email, meta=meta)
    if old_email is not None:
        _index_email(uow, old_email).discard(row.person_id)
    _index_email(uow, row.email).add(row.person_id)
    report.changed += 1


def _index_email(uow: UnitOfWork, email: str) -> EmailIndex:
    index = uow.get(EmailIndex, EmailIndex.create_id(email))
    if index is None:
        index = EmailIndex(email=email)
        uow.add(index)
    return index


def _batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch
