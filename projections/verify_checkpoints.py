"""`pm-ops verify --checkpoints`: does the log still hash to what was signed and published?

The notes are read from where the database cannot reach (a witness directory, an S3
bucket): each must be signed by the verifier key, for our origin; then one pass over the
log rebuilds the tree from the events as stored now (never from the tree table: it lives
in the database under suspicion) and compares its root at every checkpoint's size. The
first checkpoint the log no longer matches is named with the file that holds it."""

from dataclasses import dataclass

from projections.chain import content_digest
from projections.merkle import CompactRange
from projections.replay import notifications
from projections.report import Report
from projections.transparency import Checkpoint, NoteError, open_note
from projections.witness_stores import (
    DirectoryStore,
    NoteStore,
    S3Store,
    StoreUnavailable,
    note_name,
    parse_s3_url,
)


@dataclass(frozen=True)
class Witnessed:
    """Where published notes are read from, and the key they must be signed with (plain
    values: `verify` may check them in a process of its own)."""

    locations: tuple[str, ...]  # directories and s3://bucket/prefix URLs
    verifier_key: str
    origin: str | None = None
    s3_endpoint: str | None = None

    def stores(self) -> list[NoteStore]:
        return [self._store(location) for location in self.locations]

    def _store(self, location: str) -> NoteStore:
        if location.startswith("s3://"):
            bucket, prefix = parse_s3_url(location)
            return S3Store(bucket, prefix, endpoint_url=self.s3_endpoint)
        return DirectoryStore(location)


@dataclass(frozen=True)
class Published:
    """A checkpoint as one witness holds it."""

    where: str  # the file or object, for people
    checkpoint: Checkpoint


def verify_checkpoints(app: object, witnessed: Witnessed) -> Report:
    report = Report()
    stores = witnessed.stores()
    published = _read(stores, witnessed.verifier_key, witnessed.origin, report)
    if not published:
        if report.ok:
            report.notes.append("checkpoints: no checkpoint is published yet")
        return report
    sizes = sorted(published)
    head = app.recorder.max_notification_id() or 0  # type: ignore[attr-defined]
    edge = CompactRange()
    wanted = iter(sizes)
    size = next(wanted)
    mismatched: list[int] = []
    for note in notifications(app, stop=head):
        if size is None:
            break
        edge.append(content_digest(note))
        while size is not None and edge.size == size:
            if any(p.checkpoint.root != edge.root() for p in published[size]):
                mismatched.append(size)
            size = next(wanted, None)
    beyond = [s for s in sizes if s > edge.size]
    _report(published, mismatched, beyond, edge.size, report)
    report.notes.append(
        f"checkpoints: {len(sizes)} signed checkpoint(s) from {len(stores)} witness(es) checked "
        f"against the log's first {edge.size} events"
    )
    return report


def _read(
    stores: list[NoteStore], verifier_key: str, origin: str | None, report: Report
) -> dict[int, list[Published]]:
    published: dict[int, list[Published]] = {}
    for store in stores:
        try:
            sizes = store.sizes()
        except StoreUnavailable as error:
            report.add("checkpoints", None, str(error))
            continue
        for size in sizes:
            where = f"{store.where.rstrip('/')}/{note_name(size)}"
            try:
                note = store.get(size)
                checkpoint = open_note(note or b"", verifier_key, origin)
            except StoreUnavailable as error:
                report.add("checkpoints", None, str(error))
                continue
            except NoteError as error:
                report.add("checkpoints", None, f"{where}: {error}")
                continue
            if checkpoint.size != size:
                report.add(
                    "checkpoints",
                    None,
                    f"{where}: the note is for a tree of {checkpoint.size} events, not {size}",
                )
                continue
            published.setdefault(size, []).append(Published(where, checkpoint))
    return published


def _report(
    published: dict[int, list[Published]],
    mismatched: list[int],
    beyond: list[int],
    log_size: int,
    report: Report,
) -> None:
    if mismatched:
        first = mismatched[0]
        where = ", ".join(p.where for p in published[first])
        later = f" (and {len(mismatched) - 1} later one(s))" if len(mismatched) > 1 else ""
        report.add(
            "checkpoints",
            None,
            f"the log no longer matches the checkpoint of size {first} ({where}){later}: an "
            f"event among its first {first} was changed, removed or inserted after it was signed",
        )
    if beyond:
        where = ", ".join(p.where for p in published[beyond[0]])
        report.add(
            "checkpoints",
            None,
            f"the checkpoint of size {beyond[0]} ({where}) covers more events than the log has "
            f"({log_size}): events were removed after it was signed",
        )
