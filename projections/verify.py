"""`pm-ops verify`: is what the projections show what the log says, and is the
log what it was when it was written?

1. The hash chain: every event's content hash, recomputed from the log, must
   match what the chain projection recorded when it first saw the event; an
   event edited, deleted, inserted or renumbered afterwards is reported with
   its position. The chain's own links are checked too.
2. State and audit: replayed from the log (plain Python, not the projections'
   SQL) up to each projection's position and compared with what their views show.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from projections.model import AUDIT_COLUMNS, Derived, notifications, replay
from projections.runner import make_lock

if TYPE_CHECKING:
    from commands.store import Store
    from projections.chain import ChainView
    from projections.read_models import ReadModels
    from projections.state import PersonRecord


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

    def then(self, later: "Report") -> "Report":
        """This report followed by `later`'s findings and notes."""
        return Report(self.findings + later.findings, self.notes + later.notes)


def verify(read_models: "ReadModels", store: "Store", *, checkpoint: bool = True) -> Report:
    """Both halves, one after the other (the CLI runs them side by side on PostgreSQL)."""
    return verify_chain(read_models, store, checkpoint=checkpoint).then(
        verify_read_models(read_models)
    )


def verify_chain(read_models: "ReadModels", store: "Store", *, checkpoint: bool = True) -> Report:
    report = Report()
    if checkpoint:
        _checkpoint_chain(read_models, store, report)
    check_chain(read_models.app, read_models.chain, report)
    return report


def verify_read_models(read_models: "ReadModels") -> Report:
    report = Report()
    for name in ("state", "audit"):
        if read_models.projection(name).upgrade_pending():
            report.notes.append(
                f"{name}: awaits its rebuild for this release; compared as the earlier "
                "release built it"
            )
    check_read_models(read_models, report)
    return report


def _checkpoint_chain(read_models: "ReadModels", store: "Store", report: Report) -> None:
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
            report.notes.append(f"chained {added} new event(s) (checkpoint)")


def check_chain(app: Any, chain: "ChainView", report: Report) -> None:
    from projections.chain import GENESIS, chain_hash, content_hash

    chained_to = chain.position()
    head = app.recorder.max_notification_id() or 0
    links = chain.links(chained_to)
    notes = notifications(app, stop=chained_to) if chained_to else iter(())
    link, note = next(links, None), next(notes, None)
    previous = GENESIS
    checked = 0
    while link is not None or note is not None:
        if link is not None and (note is None or link.position <= note.id):
            if note is not None and note.id == link.position:
                if content_hash(note) != link.content_hash:
                    report.add("chain", link.position, "event was changed after it was recorded")
                checked += 1
                note = next(notes, None)
            else:
                report.add("chain", link.position, "event is missing from the log (deleted)")
            if chain_hash(previous, link.content_hash) != link.chain_hash:
                report.add("chain", link.position, "the chain table itself was altered here")
            previous = link.chain_hash
            link = next(links, None)
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


def check_read_models(read_models: "ReadModels", report: Report) -> None:
    from projections.audit import AuditFilters
    from projections.state import StateSnapshot

    app = read_models.app
    shown = read_models.state.snapshot()
    state_at = shown.position
    audit_at = read_models.audit.position()
    audit_rows = {e.position: e.row() for e in read_models.audit.entries(AuditFilters())}

    derived_state = replay(app, stop=state_at) if state_at else Derived()
    derived_audit = (
        derived_state
        if audit_at == state_at
        else (replay(app, stop=audit_at) if audit_at else Derived())
    )
    for position, problem in sorted(set(derived_state.undecodable + derived_audit.undecodable)):
        report.add("log", position, f"event cannot be read: {problem}")

    expected = StateSnapshot.from_derived(derived_state)
    _compare_people(shown.people, expected.people, report)
    if shown.communities != expected.communities:
        for cid in sorted(set(shown.communities) | set(expected.communities)):
            if shown.communities.get(cid) != expected.communities.get(cid):
                report.add(
                    "state",
                    None,
                    f"community {cid}: projection has {shown.communities.get(cid)!r}, "
                    f"log says {expected.communities.get(cid)!r}",
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
    if not read_models.projection("audit").upgrade_pending():
        _compare_emails(read_models.audit.emails_had(), derived_audit.emails_had, report)
    memberships = sum(len(p.communities) for p in expected.people)
    report.notes.append(
        f"state: {len(expected.people)} people, {memberships} memberships "
        f"checked at position {state_at}; audit: {len(expected_audit)} entries checked "
        f"at position {audit_at}"
    )


def _compare_people(
    shown: "tuple[PersonRecord, ...]", expected: "tuple[PersonRecord, ...]", report: Report
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
