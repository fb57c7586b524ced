"""The hash chain read model: each event's position and content, linked to the
previous hash. `verify` recomputes it from the log; an event edited, deleted or
reordered in SQL after it was chained is reported with its position."""

from collections.abc import Iterator, Sequence
from hashlib import sha256
from typing import Any, NamedTuple

from projections.log import read_ahead
from projections.projection import TableProjection
from projections.store import ViewsMixin

GENESIS = "0" * 64


def content_hash(note: Any) -> str:
    """A digest of one stored event: its position, identity, topic and content."""
    state = note.state
    if type(state) is not bytes:
        state = state.encode() if isinstance(state, str) else bytes(state)
    head = f"{note.id}\n{note.originator_id}\n{note.originator_version}\n{note.topic}\n"
    return sha256(head.encode() + state).hexdigest()  # one call: this runs per event


def chain_hash(previous: str, content: str) -> str:
    return sha256(f"{previous}{content}".encode()).hexdigest()


class LogAltered(Exception):
    """The chain shows the log changed after it was written: never rebuild over it."""


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

    def before_rebuild(self) -> None:
        """The chain is the evidence that the log is what it was: rebuilding it over
        an altered log would make the alteration the new truth."""
        from projections.verify import Report, check_chain

        report = Report()
        check_chain(self.app, ChainView(self.views), report)
        if not report.ok:
            shown = "\n  ".join(str(finding) for finding in report.findings[:10])
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
