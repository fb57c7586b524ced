"""`pm-ops verify`: is what the projections show what the log says, and is the
log what it was when it was written?

1. The hash chain (chain.py `check_chain`): every event's content hash, recomputed
   from the log, must match what the chain projection recorded when it first saw
   the event; an event edited, deleted, inserted or renumbered afterwards is
   reported with its position. The chain's own links are checked too.
2. Every read model (state, audit, activity): derived again from the log in plain
   Python (each module's own `...Model`, not its SQL) up to the projection's
   position and compared with what its tables hold.
3. A projection that cannot go on (it failed to store an event and keeps failing)
   is reported with the event it is stuck on.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from projections.activity import ActivityModel, stored_rows
from projections.audit import AUDIT_COLUMNS, AuditFilters, AuditModel
from projections.chain import check_chain
from projections.replay import Model, replay
from projections.report import Report
from projections.runner import make_lock
from projections.state import PersonRecord, StateModel
from projections.verify_checkpoints import Witnessed, verify_checkpoints

if TYPE_CHECKING:
    from commands.store import Store
    from projections.read_models import ReadModels


def verify(
    read_models: "ReadModels",
    store: "Store",
    *,
    chain_ahead: bool = True,
    witnessed: Witnessed | None = None,
) -> Report:
    """Both halves, one after the other (the CLI runs them side by side on PostgreSQL)."""
    return verify_chain(read_models, store, chain_ahead=chain_ahead, witnessed=witnessed).then(
        verify_read_models(read_models)
    )


def verify_chain(
    read_models: "ReadModels",
    store: "Store",
    *,
    chain_ahead: bool = True,
    witnessed: Witnessed | None = None,
) -> Report:
    """The log against its evidence: the hash chain and, if given, the published
    checkpoints (what the database cannot rewrite)."""
    report = Report()
    if chain_ahead:
        _chain_ahead(read_models, store, report)
    checked = check_chain(read_models.app, read_models.chain)
    for position, message in checked.findings:
        report.add("chain", position, message)
    report.notes.append(checked.note())
    if witnessed is not None:
        report = report.then(verify_checkpoints(read_models.app, witnessed))
    return report


def verify_read_models(read_models: "ReadModels") -> Report:
    report = Report()
    for name in READ_MODELS:
        if read_models.projection(name).upgrade_pending():
            report.notes.append(
                f"{name}: awaits its rebuild for this release; compared as the earlier "
                "release built it"
            )
    check_read_models(read_models, report)
    check_stuck(read_models, report)
    return report


def _chain_ahead(read_models: "ReadModels", store: "Store", report: Report) -> None:
    """Chain whatever the chain runner has not reached yet, so the next verify can
    tell if those events change (if a runner is active, it is keeping up)."""
    chain = read_models.projection("chain")
    if chain.upgrade_pending():
        return  # its runner rebuilds it first (and refuses to over an altered log)
    lock = make_lock(store, chain.name)
    if lock.try_acquire():
        try:
            added = chain.catch_up()
        finally:
            lock.release()
        if added:
            report.notes.append(f"chained {added} new event(s) ahead of its runner")


# --- the read models, derived again ---------------------------------------------


@dataclass
class Compared:
    """One read model: its derivation, and how to compare it with what is stored."""

    model: Model
    check: Callable[["ReadModels", Report], None]


def check_read_models(read_models: "ReadModels", report: Report) -> None:
    """Each read model against its derivation from the log, at the position it reached.
    Read models at the same position (the usual case) share one replay."""
    at = {name: read_models.views.position(name) for name in READ_MODELS}
    for position in sorted(set(at.values())):
        compared = [READ_MODELS[name](read_models, position) for name in at if at[name] == position]
        if position:
            replayed = replay(read_models.app, [c.model for c in compared], stop=position)
            for where, problem in replayed.undecodable:
                report.add("log", where, f"event cannot be read: {problem}")
        for each in compared:
            each.check(read_models, report)


def _state(read_models: "ReadModels", position: int) -> Compared:
    model = StateModel()

    def check(read_models: "ReadModels", report: Report) -> None:
        shown = read_models.state.snapshot()
        expected = model.snapshot(position)
        _compare_people(shown.people, expected.people, report)
        for cid in sorted(set(shown.communities) | set(expected.communities)):
            if shown.communities.get(cid) != expected.communities.get(cid):
                report.add(
                    "state",
                    None,
                    f"community {cid}: projection has {shown.communities.get(cid)!r}, "
                    f"log says {expected.communities.get(cid)!r}",
                )
        memberships = sum(len(p.communities) for p in expected.people)
        report.notes.append(
            f"state: {len(expected.people)} people, {memberships} memberships checked at "
            f"position {position}"
        )

    return Compared(model, check)


def _audit(read_models: "ReadModels", position: int) -> Compared:
    model = AuditModel()

    def check(read_models: "ReadModels", report: Report) -> None:
        stored = {e.position: e.row() for e in read_models.audit.entries(AuditFilters())}
        expected = {e.position: e.row() for e in model.entries}
        _compare_rows("audit", "audit entry", AUDIT_COLUMNS, stored, expected, report)
        if not read_models.projection("audit").upgrade_pending():
            _compare_emails(read_models.audit.emails_had(), model.emails_had, report)
        report.notes.append(f"audit: {len(expected)} entries checked at position {position}")

    return Compared(model, check)


def _activity(read_models: "ReadModels", position: int) -> Compared:
    from projections.activity import ACTIVITY_COLUMNS

    model = ActivityModel()

    def check(read_models: "ReadModels", report: Report) -> None:
        with read_models.views.read() as cursor:
            stored = stored_rows(read_models.views, cursor)
        _compare_rows("activity", "call", ACTIVITY_COLUMNS, stored, model.rows, report)
        report.notes.append(f"activity: {len(model.rows)} calls checked at position {position}")

    return Compared(model, check)


READ_MODELS: dict[str, Callable[["ReadModels", int], Compared]] = {
    "state": _state,
    "audit": _audit,
    "activity": _activity,
}


def check_stuck(read_models: "ReadModels", report: Report) -> None:
    """A projection that failed to store an event, and has not moved past it since."""
    for name, fault in sorted(read_models.views.faults().items()):
        report.add(name, fault.position, f"the {name} projection is stuck: {fault.reason}")


def _compare_rows(
    area: str,
    what: str,
    columns: tuple[str, ...],
    stored: dict[int, tuple[Any, ...]],
    expected: dict[int, tuple[Any, ...]],
    report: Report,
) -> None:
    for position in sorted(set(stored) | set(expected)):
        got, want = stored.get(position), expected.get(position)
        if got == want:
            continue
        if got is None:
            report.add(area, position, f"{what} missing from the {area} projection")
        elif want is None:
            report.add(area, position, f"{what} has no matching event in the log")
        else:
            fields = [c for c, a, b in zip(columns, got, want, strict=True) if a != b]
            report.add(area, position, f"{what} differs from the log in {', '.join(fields)}")


def _compare_people(
    shown: tuple[PersonRecord, ...], expected: tuple[PersonRecord, ...], report: Report
) -> None:
    people = {p.person_id: (p.email, p.signup_code) for p in shown}
    wanted = {p.person_id: (p.email, p.signup_code) for p in expected}
    for person_id in sorted(set(people) | set(wanted)):
        got, want = people.get(person_id), wanted.get(person_id)
        if got != want:
            report.add(
                "state",
                None,
                f"person {person_id}: projection has {_show(got)}, log says {_show(want)}",
            )
    members = {(p.person_id, c) for p in shown for c in p.communities}
    expected_members = {(p.person_id, c) for p in expected for c in p.communities}
    for person_id, community_id in sorted(members - expected_members):
        report.add(
            "state",
            None,
            f"person {person_id} shown in community {community_id}; the log disagrees",
        )
    for person_id, community_id in sorted(expected_members - members):
        report.add("state", None, f"person {person_id} missing from community {community_id}")


def _compare_emails(
    shown: set[tuple[str, int]], expected: set[tuple[str, int]], report: Report
) -> None:
    for email, person_id in sorted(shown - expected):
        report.add(
            "audit", None, f"person {person_id} listed as having had {email!r}; log disagrees"
        )
    for email, person_id in sorted(expected - shown):
        report.add("audit", None, f"person {person_id} not listed as having had {email!r}")


def _show(value: tuple[str | None, str | None] | None) -> str:
    if value is None:
        return "no such person"
    return f"email {value[0]!r}, code {value[1]!r}"
