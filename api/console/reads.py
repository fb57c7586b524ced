"""Every read the console makes, in one place.

The console only looks: it reads the projections' tables and views and the log,
through the functions below, and nothing else in the console touches SQL of the
projections. When the projections offer typed views (state, audit search,
history), this is the one module to switch over.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from api.bootstrap import Services
from projections import status as projection_status
from projections.activity import (
    HourlyCount,
    hour_of,
    hourly_counts,
    refused_calls,
)
from projections.audit import AuditFilters
from projections.read_models import ReadModels
from projections.state import PersonState, person_as_of
from projections.store import ViewsMixin
from projections.verify import Report, check_read_models, check_stuck, verify_chain

EXPORT_BATCH = 1000


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    newer: int | None  # ?after= this position shows the newer page
    older: int | None  # ?before= this position shows the older page
    position: int  # how far the audit projection has read the log


@dataclass(frozen=True)
class PersonNow:
    person_id: int
    email: str | None
    signup_code: str | None
    communities: list[tuple[int, str | None]]
    position: int


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    at: str
    event: str
    values: dict[str, Any]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Activity:
    since: datetime
    hours: list[str]
    counts: list[HourlyCount]
    refused: list[dict[str, Any]]
    position: int


@dataclass(frozen=True)
class Integrity:
    projections: list[dict[str, Any]]
    head: int
    chain_position: int | None
    chain_hash: str | None


class Reads:
    """The console's questions, answered by the projections' typed views
    (projections/read_models.py) and the log; no SQL here."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._app = services.app

    @property
    def models(self) -> ReadModels:
        return self._services.read_models

    @property
    def views(self) -> ViewsMixin:
        return self.models.views

    # --- audit trail ----------------------------------------------------------

    def audit_page(
        self,
        filters: AuditFilters,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> AuditPage:
        """One page of the filtered trail, newest first, by keyset on the log position."""
        audit = self.models.audit
        position = audit.position()
        ascending = after is not None
        found = audit.search(filters, after, limit + 1, before=before, newest_first=not ascending)
        rows = [entry.as_dict() for entry in found[:limit]]
        more = len(found) > limit
        if ascending:
            rows.reverse()
        newer_exist = more if ascending else before is not None
        older_exist = after is not None or more
        return AuditPage(
            rows,
            newer=rows[0]["position"] if rows and newer_exist else None,
            older=rows[-1]["position"] if rows and older_exist else None,
            position=position,
        )

    def audit_export(self, filters: AuditFilters) -> Iterator[dict[str, Any]]:
        """Every entry of the filtered trail in log order, up to where the audit
        projection stood when the export began (rows appended meanwhile are left out)."""
        audit = self.models.audit
        stop = audit.position()
        return (entry.as_dict() for entry in audit.entries(filters, EXPORT_BATCH, stop=stop))

    # --- a person ---------------------------------------------------------------

    def person_now(self, person_id: int) -> PersonNow | None:
        """Memberships and code from the state projection."""
        state = self.models.state
        position = state.position()
        person = state.person(person_id)
        if person is None:
            return None
        names = state.community_names()
        communities = [(c, names.get(c)) for c in sorted(person.communities)]
        return PersonNow(person_id, person.email, person.signup_code, communities, position)

    def history(self, person_id: int) -> list[HistoryEntry]:
        """Every event of the person, straight from the log, in order."""
        return [
            HistoryEntry(
                version=entry.version,
                at=entry.at,
                event=entry.event,
                values=dict(entry.values),
                meta={
                    "actor": entry.actor,
                    "token": entry.token,
                    "workflow": entry.workflow,
                    "idempotency_key": entry.idempotency_key,
                    "request_id": entry.request_id,
                    "source_address": entry.source_address,
                },
            )
            for entry in self.models.history.person(person_id)
        ]

    def as_of(self, person_id: int, moment: datetime) -> PersonState | None:
        """The person as they were at `moment`, replayed from their events in the log."""
        return person_as_of(self._app, person_id, moment)

    # --- activity ---------------------------------------------------------------

    def activity(self, dimension: str, now: datetime, days: int = 7) -> Activity:
        since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=24 * days - 1)
        views = self.views
        hours = [hour_of(since + timedelta(hours=h)) for h in range(24 * days)]
        return Activity(
            since=since,
            hours=hours,
            counts=hourly_counts(views, since, dimension),
            refused=refused_calls(views, since),
            position=views.position("activity"),
        )

    # --- integrity --------------------------------------------------------------

    def integrity(self) -> Integrity:
        rows = projection_status(self._app, self._services.config)
        head = self.models.chain.head()
        return Integrity(
            projections=rows,
            head=self.models.head(),
            chain_position=head.position if head else None,
            chain_hash=head.chain_hash if head else None,
        )

    def verify(self, on_stage: Callable[[str], None]) -> Report:
        """`pm-ops verify --no-checkpoint`, stage by stage: the console only reads, so
        it leaves chaining new events to the chain projection's runner."""
        on_stage("chain")
        report = verify_chain(self.models, self._services.config.store, chain_ahead=False)
        on_stage("read-models")
        check_read_models(self.models, report)
        check_stuck(self.models, report)
        return report
