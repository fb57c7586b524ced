"""`pm-ops verify`: is what the projections show what the log says, and is the
log what it was when it was written?

1. The hash chain: every event's content hash, recomputed from the log, must
   match what the chain projection recorded when it first saw the event; an
   event edited, deleted, inserted or renumbered afterwards is reported with
   its position. The chain's own links are checked too.
2. State and audit: replayed from the log (plain Python, not the projections'
   SQL) up to each projection's position and compared row by row.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from projections.model import AUDIT_COLUMNS, Derived, notifications, replay
from projections.runner import make_lock
from projections.store import ViewsMixin, open_views
from projections.tables import (
    GENESIS,
    AuditProjection,
    ChainProjection,
    StateProjection,
    chain_hash,
    content_hash,
)


@dataclass(frozen=True)
class Finding:
    area: str
    position: int | None
    message: str

    def __str__(self) -> str:
        where = f"position {self.position}: " if self.position is not None else ""
        return f"[{self.area}] {where}{self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, area: str, position: int | None, message: str) -> None:
        self.findings.append(Finding(area, position, message))


def verify(app: Any, config: Any, *, checkpoint: bool = True) -> Report:
    views = open_views(app, config)
    report = Report()
    chain = ChainProjection(app, views)
    state = StateProjection(app, views)
    audit = AuditProjection(app, views)
    for projection in (chain, state, audit):
        projection.create()
    if checkpoint:
        _checkpoint_chain(config, chain, report)
    check_chain(app, views, chain, report)
    check_read_models(app, views, report)
    return report


def _checkpoint_chain(config: Any, chain: ChainProjection, report: Report) -> None:
    """Chain whatever the chain runner has not reached yet, so the next verify can
    tell if those events change (if a runner is active, it is keeping up)."""
    lock = make_lock(config, chain.name)
    if lock.try_acquire():
        try:
            added = chain.catch_up()
        finally:
            lock.release()
        if added:
            report.notes.append(f"chained {added} new event(s) (checkpoint)")


def _chain_rows(views: ViewsMixin, table: str, stop: int) -> Iterator[Any]:
    after = 0
    while True:
        with views.read() as cursor:
            views.execute(
                cursor,
                f"SELECT position, content_hash, chain_hash FROM {table} "
                "WHERE position > %s AND position <= %s ORDER BY position LIMIT 1000",
                (after, stop),
            )
            rows = cursor.fetchall()
        yield from rows
        if len(rows) < 1000:
            return
        after = rows[-1]["position"]


def check_chain(app: Any, views: ViewsMixin, chain: ChainProjection, report: Report) -> None:
    chained_to = chain.position()
    head = app.recorder.max_notification_id() or 0
    rows = _chain_rows(views, views.table("ops_chain"), chained_to)
    notes = notifications(app, stop=chained_to) if chained_to else iter(())
    row, note = next(rows, None), next(notes, None)
    previous = GENESIS
    checked = 0
    while row is not None or note is not None:
        if row is not None and (note is None or row["position"] <= note.id):
            position = row["position"]
            if note is not None and note.id == position:
                if content_hash(note) != row["content_hash"]:
                    report.add("chain", position, "event was changed after it was recorded")
                checked += 1
                note = next(notes, None)
            else:
                report.add("chain", position, "event is missing from the log (deleted)")
            if chain_hash(previous, row["content_hash"]) != row["chain_hash"]:
                report.add("chain", position, "the chain table itself was altered here")
            previous = row["chain_hash"]
            row = next(rows, None)
        else:
            report.add(
                "chain",
                note.id,
                "event was not in the log when the chain passed this position "
                "(inserted or renumbered afterwards)",
            )
            note = next(notes, None)
    report.notes.append(
        f"hash chain: {checked} event(s) checked up to position {chained_to} (log head {head})"
    )


def check_read_models(app: Any, views: ViewsMixin, report: Report) -> None:
    t = views.table
    with views.read() as cursor:
        state_at = views.position("state", cursor)
        audit_at = views.position("audit", cursor)
        views.execute(cursor, f"SELECT person_id, email, signup_code FROM {t('ops_state_people')}")
        people = {r["person_id"]: (r["email"], r["signup_code"]) for r in cursor.fetchall()}
        views.execute(cursor, f"SELECT person_id, community_id FROM {t('ops_state_memberships')}")
        members = {(r["person_id"], r["community_id"]) for r in cursor.fetchall()}
        views.execute(cursor, f"SELECT community_id, name FROM {t('ops_state_communities')}")
        communities = {r["community_id"]: r["name"] for r in cursor.fetchall()}
        views.execute(
            cursor, f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {t('ops_audit')} ORDER BY position"
        )
        audit_rows = {r["position"]: tuple(r[c] for c in AUDIT_COLUMNS) for r in cursor.fetchall()}

    derived_state = replay(app, stop=state_at) if state_at else Derived()
    derived_audit = (
        derived_state
        if audit_at == state_at
        else (replay(app, stop=audit_at) if audit_at else Derived())
    )
    for position, problem in sorted(set(derived_state.undecodable + derived_audit.undecodable)):
        report.add("log", position, f"event cannot be read: {problem}")

    expected_people = {p.person_id: (p.email, p.signup_code) for p in derived_state.people.values()}
    for person_id in sorted(set(people) | set(expected_people)):
        got, want = people.get(person_id), expected_people.get(person_id)
        if got != want:
            report.add(
                "state",
                None,
                f"person {person_id}: projection has {_show(got)}, log says {_show(want)}",
            )
    expected_members = {
        (p.person_id, c) for p in derived_state.people.values() for c in p.communities
    }
    for person_id, community_id in sorted(members - expected_members):
        report.add(
            "state",
            None,
            f"person {person_id} shown in community {community_id}; the log disagrees",
        )
    for person_id, community_id in sorted(expected_members - members):
        report.add("state", None, f"person {person_id} missing from community {community_id}")
    if communities != derived_state.communities:
        for cid in sorted(set(communities) | set(derived_state.communities)):
            if communities.get(cid) != derived_state.communities.get(cid):
                report.add(
                    "state",
                    None,
                    f"community {cid}: projection has {communities.get(cid)!r}, "
                    f"log says {derived_state.communities.get(cid)!r}",
                )

    expected_audit = {e.position: e.row() for e in derived_audit.audit}
    for position in sorted(set(audit_rows) | set(expected_audit)):
        got_row, want_row = audit_rows.get(position), expected_audit.get(position)
        if got_row == want_row:
            continue
        if got_row is None:
            report.add("audit", position, "entry missing from the audit trail")
        elif want_row is None:
            report.add("audit", position, "audit entry has no matching change in the log")
        else:
            fields = [c for c, a, b in zip(AUDIT_COLUMNS, got_row, want_row, strict=True) if a != b]
            report.add(
                "audit", position, f"audit entry differs from the log in {', '.join(fields)}"
            )
    report.notes.append(
        f"state: {len(expected_people)} people, {len(expected_members)} memberships "
        f"checked at position {state_at}; audit: {len(expected_audit)} entries checked "
        f"at position {audit_at}"
    )


def _show(value: tuple[str | None, str | None] | None) -> str:
    if value is None:
        return "no such person"
    return f"email {value[0]!r}, code {value[1]!r}"
