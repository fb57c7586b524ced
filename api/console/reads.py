"""Every read the console makes, in one place.

The console only looks: it reads the projections' tables and views and the log,
through the functions below, and nothing else in the console touches SQL of the
projections. When the projections offer typed views (state, audit search,
history), this is the one module to switch over.
"""

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from eventsourcing.utils import get_topic

from aggregates import Token
from api.bootstrap import Services
from projections import status as projection_status
from projections.activity import (
    HourlyCount,
    hour_of,
    hourly_counts,
    refused_calls,
)
from projections.audit import AuditFilters
from projections.checkpoints import KeyUnavailable, Signer, StoredCheckpoint
from projections.feeds import WITNESSES
from projections.proofs import inclusion_document
from projections.read_models import ReadModels
from projections.state import PersonState, person_as_of
from projections.store import ViewsMixin
from projections.transparency import NoteError, open_note
from projections.verify import Report, check_read_models, check_stuck, verify_chain

EXPORT_BATCH = 1000
LAG_COUNT_LIMIT = 1000  # a witness further behind is shown as "more than 1000"
# The events of these aggregates carry secrets (a token's secret hash; a Customer.io
# signing key in tokens issued by 0.1): a proof from the console leaves them out.
WITHHELD_AGGREGATES = (Token,)


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
    position: int | None  # in the log; None when the audit trail does not say (see history)


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


@dataclass(frozen=True)
class LatestCheckpoint:
    size: int  # the events it covers
    root: str  # base64, as in the note
    at: str  # when it was signed
    position: int  # the log position of the last event it covers
    note: str  # the signed note, as the witnesses hold it
    signature_ok: bool | None  # checked with the verifier key (None: no key to check with)
    signature_problem: str | None  # what is wrong with the signature


@dataclass(frozen=True)
class WitnessState:
    name: str
    state: str  # "off", "stuck", "keeping up", "catching up" or "not running"
    detail: str | None  # why it is off, stuck or not running
    holds: int  # the size of the latest checkpoint it holds
    behind: int  # checkpoints it does not hold yet (LAG_COUNT_LIMIT + 1: more)

    @property
    def alarm(self) -> bool:
        return self.state in ("stuck", "not running")

    @property
    def lag(self) -> str:
        if self.state == "off":
            return "—"
        if self.behind == 0:
            return "holds the latest"
        if self.behind > LAG_COUNT_LIMIT:
            return f"more than {LAG_COUNT_LIMIT} checkpoints behind"
        return f"{self.behind} checkpoint{'' if self.behind == 1 else 's'} behind"


@dataclass(frozen=True)
class Checkpoints:
    off: str | None  # why checkpoints are off; None when they are on
    latest: LatestCheckpoint | None
    log_head: int
    verifier_key: str | None
    key_problem: str | None  # why the verifier key cannot be shown
    witnesses: list[WitnessState]


@dataclass(frozen=True)
class ProofCoverage:
    """Which audit entries have an inclusion proof: those up to the latest checkpoint."""

    up_to: int  # the log position of the last event signed; 0 before the first checkpoint
    off: bool  # checkpoints are off (no later entry will be signed)

    def covers(self, position: int) -> bool:
        return position <= self.up_to


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
        positions = self.models.history.positions(person_id)
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
                position=positions.get(entry.version),
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

    # --- signed checkpoints (SPEC §10) ---------------------------------------------

    def checkpoints(self, status_rows: list[dict[str, Any]]) -> Checkpoints:
        """The latest checkpoint, its witnesses (from `status_rows`, projections.status)
        and the verifier key; `off` says why there are none when OPS_CHECKPOINT_KEY is unset."""
        rows = {row["projection"]: row for row in status_rows}
        off = _off_reason(rows["checkpoints"]["runner"])
        key, key_problem = self._verifier_key()
        latest = self.models.tree.latest()
        return Checkpoints(
            off=off,
            latest=None if latest is None else _latest(latest, key),
            log_head=self.models.head(),
            verifier_key=key,
            key_problem=key_problem,
            witnesses=[self._witness(rows[name]) for name in WITNESSES if name in rows],
        )

    def _verifier_key(self) -> tuple[str | None, str | None]:
        settings = self._services.config.checkpoints
        if settings is None:
            return None, None
        try:
            return Signer(settings.key_path, settings.origin).verifier_key(), None
        except KeyUnavailable as error:
            return None, str(error)

    def _witness(self, row: dict[str, Any]) -> WitnessState:
        name, holds = row["projection"], int(row["position"])
        off = _off_reason(row["runner"])
        if off is not None:
            return WitnessState(name, "off", off, holds, 0)
        later = self.models.tree.checkpoints(after=holds, limit=LAG_COUNT_LIMIT + 1)
        behind = len(later)
        if row["stuck"]:
            return WitnessState(name, "stuck", row["stuck"], holds, behind)
        if behind == 0:
            return WitnessState(name, "keeping up", None, holds, 0)
        if row["runner"] == "active":
            return WitnessState(name, "catching up", None, holds, behind)
        idle = "no runner is active (is `pm-ops serve` or `pm-ops projections run` running?)"
        return WitnessState(name, "not running", idle, holds, behind)

    def proof_coverage(self) -> ProofCoverage:
        latest = self.models.tree.latest()
        off = self._services.config.checkpoints is None
        return ProofCoverage(up_to=0 if latest is None else latest.position, off=off)

    def inclusion_proof(self, position: int, size: int | None = None) -> dict[str, Any]:
        """What `pm-ops checkpoints prove` prints (ProofUnavailable says why there is
        none), without the stored event when it carries a secret: the proof of its
        leaf still checks; `pm-ops checkpoints prove` gives the event to those who may
        see it."""
        document = inclusion_document(self._app, self.models.tree, position, size)
        topic = document["event"]["topic"]
        if any(topic.startswith(get_topic(kind) + ".") for kind in WITHHELD_AGGREGATES):
            del document["event"]
            document["event_withheld"] = (
                "this event belongs to a token: it holds the secret's hash (and, for a "
                "token issued by 0.1, a Customer.io signing key), so the console leaves it "
                "out; `pm-ops checkpoints prove --position P` includes it"
            )
        return document

    def verifier_script(self) -> bytes:
        """projections/transparency.py as installed: the one file an auditor checks with."""
        return resources.files("projections").joinpath("transparency.py").read_bytes()


def _off_reason(runner: str) -> str | None:
    """Why a projection or feed is off, from its status row ("off: set X ..."), or None."""
    return runner.removeprefix("off:").strip() if runner.startswith("off:") else None


def _latest(checkpoint: StoredCheckpoint, verifier_key: str | None) -> LatestCheckpoint:
    ok, problem = None, None
    if verifier_key is not None:
        try:
            open_note(checkpoint.note, verifier_key)
            ok = True
        except NoteError as error:
            ok, problem = False, str(error)
    return LatestCheckpoint(
        size=checkpoint.size,
        root=base64.b64encode(checkpoint.root).decode(),
        at=checkpoint.at,
        position=checkpoint.position,
        note=checkpoint.note.decode(),
        signature_ok=ok,
        signature_problem=problem,
    )
