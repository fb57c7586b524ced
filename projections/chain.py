"""The hash chain read model: each event's position and content, linked to the
previous hash. `verify` recomputes it from the log; an event edited, deleted or
reordered in SQL after it was chained is reported with its position."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, NamedTuple

from projections.log import read_ahead
from projections.projection import LogAltered, TableProjection
from projections.replay import notifications
from projections.store import ViewsMixin

GENESIS = "0" * 64


def content_digest(note: Any) -> bytes:
    """A digest of one stored event: its position, identity, topic and content (the chain
    keeps it in hex; it is also the event's leaf in the checkpoints' tree)."""
    state = note.state
    if type(state) is not bytes:
        state = state.encode() if isinstance(state, str) else bytes(state)
    head = f"{note.id}\n{note.originator_id}\n{note.originator_version}\n{note.topic}\n"
    return sha256(head.encode() + state).digest()  # one call: this runs per event


def content_hash(note: Any) -> str:
    return content_digest(note).hex()


def chain_hash(previous: str, content: str) -> str:
    return sha256(f"{previous}{content}".encode()).hexdigest()


class ChainLink(NamedTuple):  # a tuple: verify makes one per event of the log
    position: int
    content_hash: str
    chain_hash: str


class ChainProjection(TableProjection):
    name = "chain"
    version = 1
    topics = None

    def tables(self) -> list[str]:
        return [self.t("ops_chain")]

    def ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.t('ops_chain')} ("
            "position BIGINT PRIMARY KEY, content_hash TEXT NOT NULL, chain_hash TEXT NOT NULL)"
        ]

    def check(self) -> None:
        """The chain hashes every stored event as it is: none needs a meaning."""

    def before_rebuild(self) -> None:
        """The chain is the evidence that the log is what it was: rebuilding it over
        an altered log would make the alteration the new truth."""
        checked = check_chain(self.app, ChainView(self.views))
        if checked.findings:
            shown = "\n  ".join(
                f"position {position}: {message}" for position, message in checked.findings[:10]
            )
            raise LogAltered(
                "the hash chain shows the log was altered after it was written; rebuilding "
                f"it would erase that evidence:\n  {shown}\nInvestigate with `pm-ops verify`."
            )

    def decode(self, notes: Sequence[Any]) -> list[tuple[int, Any]]:
        """The chain hashes stored events as they are: nothing to decode."""
        return [(note.id, note) for note in notes]

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        table = self.t("ops_chain")
        self.execute(cursor, f"SELECT chain_hash FROM {table} ORDER BY position DESC LIMIT 1")
        row = cursor.fetchone()
        previous = row["chain_hash"] if row else GENESIS
        rows = []
        for position, note in events:
            content = content_hash(note)
            previous = chain_hash(previous, content)
            rows.append((position, content, previous))
        self.views.execute_rows(
            cursor,
            f"INSERT INTO {table} (position, content_hash, chain_hash) "
            "SELECT position, content_hash, chain_hash FROM {rows} "
            "WHERE true ON CONFLICT (position) DO NOTHING",
            (("position", "bigint"), ("content_hash", "text"), ("chain_hash", "text")),
            rows,
        )


class ChainView:
    def __init__(self, views: ViewsMixin) -> None:
        self.views = views

    def position(self) -> int:
        return self.views.position(ChainProjection.name)

    def head(self) -> ChainLink | None:
        """The newest link: what the chain vouches for, up to its position."""
        with self.views.read() as cursor:
            self.views.execute(
                cursor,
                f"SELECT position, content_hash, chain_hash FROM {self.views.table('ops_chain')} "
                "ORDER BY position DESC LIMIT 1",
            )
            row = cursor.fetchone()
        return ChainLink(row["position"], row["content_hash"], row["chain_hash"]) if row else None

    def links(self, stop: int, batch: int = 5000) -> Iterator[ChainLink]:
        """The chain in position order up to `stop` (inclusive), a window of `batch`
        positions at a time (see TableProjection.read for why a window), the next
        window while the caller works on this one (PostgreSQL)."""
        table = self.views.table("ops_chain")
        windows = [(after, min(stop, after + batch)) for after in range(0, stop, batch)]

        def fetch(window: tuple[int, int]) -> list[Any]:
            with self.views.read(tuples=True) as cursor:
                self.views.execute(
                    cursor,
                    f"SELECT position, content_hash, chain_hash FROM {table} "
                    "WHERE position > %s AND position <= %s ORDER BY position",
                    window,
                )
                return cursor.fetchall()

        for rows in read_ahead(fetch, windows, thread=self.views.is_postgres):
            yield from map(ChainLink._make, rows)


@dataclass
class ChainCheck:
    """What recomputing the chain from the log found: (position, what is wrong) each."""

    chained_to: int
    head: int
    checked: int = 0
    findings: list[tuple[int, str]] = field(default_factory=list)

    def note(self) -> str:
        return (
            f"hash chain: {self.checked} event(s) checked up to position {self.chained_to} "
            f"(log head {self.head})"
        )


def check_chain(app: Any, chain: ChainView) -> ChainCheck:
    """Every event's content hash, recomputed from the log, against the link the chain
    recorded when it first saw the event; and every link against the one before it."""
    chained_to = chain.position()
    result = ChainCheck(chained_to, app.recorder.max_notification_id() or 0)
    links = chain.links(chained_to)
    notes = notifications(app, stop=chained_to) if chained_to else iter(())
    link, note = next(links, None), next(notes, None)
    previous = GENESIS
    while link is not None or note is not None:
        if link is not None and (note is None or link.position <= note.id):
            if note is not None and note.id == link.position:
                if content_hash(note) != link.content_hash:
                    result.findings.append(
                        (link.position, "event was changed after it was recorded")
                    )
                result.checked += 1
                note = next(notes, None)
            else:
                result.findings.append((link.position, "event is missing from the log (deleted)"))
            if chain_hash(previous, link.content_hash) != link.chain_hash:
                result.findings.append((link.position, "the chain table itself was altered here"))
            previous = link.chain_hash
            link = next(links, None)
        else:
            assert note is not None
            result.findings.append(
                (
                    note.id,
                    "event was not in the log when the chain passed this position "
                    "(inserted or renumbered afterwards)",
                )
            )
            note = next(notes, None)
    return result
