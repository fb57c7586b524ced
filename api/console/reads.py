"""Every read the console makes, in one place.

The console only looks: it reads the projections' tables and views and the log,
through the functions below, and nothing else in the console touches SQL of the
projections. When the projections offer typed views (state, audit search,
history), this is the one module to switch over.
"""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aggregates import Person, normalise_email
from api.bootstrap import Services
from api.cli.auditing import _people_who_had
from projections import status as projection_status
from projections.activity import (
    ActivityProjection,
    HourlyCount,
    hour_of,
    hourly_counts,
    refused_calls,
)
from projections.model import AUDIT_COLUMNS, Derived, PersonState, event_name, iso
from projections.store import ViewsMixin, open_views
from projections.tables import AuditProjection, ChainProjection, StateProjection
from projections.verify import Report, check_chain, check_read_models

EXPORT_BATCH = 1000


@dataclass(frozen=True)
class AuditFilters:
    person: int | None = None
    email: str | None = None
    community: int | None = None
    actor: str | None = None
    token: str | None = None
    workflow: str | None = None
    operation: str | None = None
    since: datetime | None = None
    until: datetime | None = None


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


@dataclass
class _Where:
    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


class Reads:
    def __init__(self, services: Services) -> None:
        self._app = services.app
        self._config = services.config
        self._views: ViewsMixin | None = None
        self._lock = threading.Lock()

    @property
    def views(self) -> ViewsMixin:
        """The projections' views, their tables created on first use (a console may be
        opened before the projections process has created them)."""
        with self._lock:
            if self._views is None:
                views = open_views(self._app, self._config)
                for projection in (
                    StateProjection,
                    AuditProjection,
                    ChainProjection,
                    ActivityProjection,
                ):
                    projection(self._app, views).create()
                self._views = views
        return self._views

    # --- audit trail ----------------------------------------------------------

    def _audit_where(self, filters: AuditFilters) -> _Where:
        where = _Where()
        for column, value in (
            ("person_id", filters.person),
            ("community_id", filters.community),
            ("token", filters.token),
            ("operation", filters.operation),
        ):
            if value is not None:
                where.add(f"{column} = %s", value)
        for column, value in (("actor", filters.actor), ("workflow", filters.workflow)):
            if value is not None:  # typed by people: "customer.io" means Customer.io
                where.add(f"LOWER({column}) = LOWER(%s)", value)
        if filters.email is not None:
            people = sorted(_people_who_had(self.views, normalise_email(filters.email)))
            if people:
                where.add(f"person_id IN ({', '.join(['%s'] * len(people))})", *people)
            else:
                where.add("1 = 0")
        if filters.since is not None:
            where.add("at >= %s", iso(filters.since))
        if filters.until is not None:
            where.add("at <= %s", iso(filters.until))
        return where

    def audit_page(
        self,
        filters: AuditFilters,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> AuditPage:
        """One page of the filtered trail, newest first, by keyset on the log position."""
        views = self.views
        where = self._audit_where(filters)
        ascending = after is not None
        if after is not None:
            where.add("position > %s", after)
        elif before is not None:
            where.add("position < %s", before)
        statement = (
            f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {views.table('ops_audit')}{where.sql()} "
            f"ORDER BY position {'ASC' if ascending else 'DESC'} LIMIT %s"
        )
        with views.read() as cursor:
            position = views.position("audit", cursor)
            views.execute(cursor, statement, [*where.params, limit + 1])
            rows = [{c: r[c] for c in AUDIT_COLUMNS} for r in cursor.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
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
        views = self.views
        stop = views.position("audit")
        after = 0
        while True:
            where = self._audit_where(filters)
            where.add("position > %s", after)
            where.add("position <= %s", stop)
            with views.read() as cursor:
                views.execute(
                    cursor,
                    f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {views.table('ops_audit')}"
                    f"{where.sql()} ORDER BY position LIMIT %s",
                    [*where.params, EXPORT_BATCH],
                )
                rows = [{c: r[c] for c in AUDIT_COLUMNS} for r in cursor.fetchall()]
            yield from rows
            if len(rows) < EXPORT_BATCH:
                return
            after = rows[-1]["position"]

    # --- a person ---------------------------------------------------------------

    def person_now(self, person_id: int) -> PersonNow | None:
        """Memberships and code from the state projection."""
        views = self.views
        t = views.table
        with views.read() as cursor:
            position = views.position("state", cursor)
            views.execute(
                cursor,
                f"SELECT email, signup_code FROM {t('ops_state_people')} WHERE person_id = %s",
                (person_id,),
            )
            person = cursor.fetchone()
            if person is None:
                return None
            views.execute(
                cursor,
                f"SELECT m.community_id, c.name FROM {t('ops_state_memberships')} m "
                f"LEFT JOIN {t('ops_state_communities')} c ON c.community_id = m.community_id "
                "WHERE m.person_id = %s ORDER BY m.community_id",
                (person_id,),
            )
            communities = [(r["community_id"], r["name"]) for r in cursor.fetchall()]
        return PersonNow(person_id, person["email"], person["signup_code"], communities, position)

    def history(self, person_id: int) -> list[HistoryEntry]:
        """Every event of the person, straight from the log, in order."""
        hidden = {"originator_id", "originator_version", "timestamp", "meta", "originator_topic"}
        entries = []
        for event in self._person_events(person_id):
            entries.append(
                HistoryEntry(
                    version=event.originator_version,
                    at=iso(event.timestamp),
                    event=event_name(event),
                    values={k: v for k, v in vars(event).items() if k not in hidden},
                    meta=getattr(event, "meta", None) or {},
                )
            )
        return entries

    def as_of(self, person_id: int, moment: datetime) -> PersonState | None:
        """The person as they were at `moment`, replayed from their events in the log."""
        derived = Derived()
        for event in self._person_events(person_id):
            if event.timestamp <= moment:
                derived.apply(event, 0)
        return derived.people.get(person_id)

    def _person_events(self, person_id: int) -> list[Any]:
        stored = self._app.recorder.select_events(Person.create_id(person_id))
        return [self._app.mapper.to_domain_event(s) for s in stored]

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
        views = self.views
        rows = projection_status(self._app, self._config)
        with views.read() as cursor:
            views.execute(
                cursor,
                f"SELECT position, chain_hash FROM {views.table('ops_chain')} "
                "ORDER BY position DESC LIMIT 1",
            )
            chain = cursor.fetchone()
        return Integrity(
            projections=rows,
            head=self._app.recorder.max_notification_id() or 0,
            chain_position=chain["position"] if chain else None,
            chain_hash=chain["chain_hash"] if chain else None,
        )

    def verify(self, on_stage: Callable[[str], None]) -> Report:
        """`pm-ops verify --no-checkpoint`, stage by stage: the console only reads, so
        it leaves chaining new events to the chain projection's runner."""
        views = self.views
        report = Report()
        on_stage("chain")
        check_chain(self._app, views, ChainProjection(self._app, views), report)
        on_stage("read-models")
        check_read_models(self._app, views, report)
        return report
