"""The directory import: the people and communities the operations refer to.

Rows arrive validated (the CLI refuses a bad file whole, with line numbers); each batch
is read in a query or two and written in one transaction (one COPY under the recorder's
lock); re-running is a no-op. People have an import of their own
(commands/people_import.py): a million of them must import in under a minute."""

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.application import Application

from aggregates import Community
from commands.bulk import write_aggregates
from commands.people_import import IMPORTER, ImportReport, PeopleImport, PersonRow, batched
from commands.tokens import admin_meta
from commands.unit_of_work import UnitOfWork

__all__ = ["CommunityRow", "DirectoryCommands", "ImportReport", "PersonRow"]


class CommunityRow(NamedTuple):
    line: int
    community_id: int
    name: str


class DirectoryCommands(Application[UUID]):
    """Mixed into OpsApplication: `pm-ops directory import` and `demo`."""

    def import_people(
        self,
        rows: Iterable[PersonRow],
        batch_size: int = 1000,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        return PeopleImport(self).run(rows, batch_size, on_batch)

    def import_communities(
        self,
        rows: Iterable[CommunityRow],
        batch_size: int = 1000,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        report = ImportReport()
        meta = admin_meta(IMPORTER)
        for batch in batched(rows, batch_size):
            uow = UnitOfWork(self.repository)
            uow.read_many(Community.create_id(row.community_id) for row in batch)
            for row in batch:
                _import_community(uow, row, meta, report)
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
