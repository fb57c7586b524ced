"""The hash chain read model: each event's position and content, linked to the
previous hash. `verify` recomputes it from the log; an event edited, deleted or
reordered in SQL after it was chained is reported with its position."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, NamedTuple

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row

from commands.library_internals import connection, content_digests_statement, datastore_of
from projections.log import read_ahead, read_log
from projections.projection import LogAltered, TableProjection
from projections.replay import notifications
from projections.store import ViewsMixin

GENESIS = "0" * 64


def content_digest(note: Any) -> bytes:
    """A digest of one stored event: its position, identity, topic and content (the chain
    keeps it in hex; it is also the event's leaf in the checkpoints' tree). PostgreSQL
    computes the same (library_internals.content_digests_statement, held equal to this by
    tests/test_library_contract.py); `verify` always hashes here."""
    state = note.state
    if type(state) is not bytes:
        state = state.encode() if isinstance(state, str) else bytes(state)
    head = f"{note.id}\n{note.originator_id}\n{note.originator_version}\n{note.topic}\n"
    return sha256(head.encode() + state).digest()  # one call: this runs per event


def read_digests(recorder: Any, start: int, stop: int) -> list[tuple[int, bytes]]:
    """(position, content digest) of every stored event from `start` to `stop` (both
    inclusive), in log order: content_digest, which PostgreSQL computes as it reads,
    so 40 bytes an event come over rather than the event (for the chain and the tree, which
    follow every event, reading whole events was most of what they cost beside a
    saturated API); `verify` hashes the events it reads itself, as content_digest does."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        return [(note.id, content_digest(note)) for note in read_log(recorder, start, stop)]
    with connection(datastore_of(recorder)) as conn, conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(content_digests_statement(recorder), [start, stop], prepare=True)
        return [(position, bytes(digest)) for position, digest in cursor.fetchall()]


def content_hash(note: Any) -> str:
    return content_digest(note).hex()


def chain_hash(previous: str, content: str) -> str:
    return sha256(f"{previous}{content}".encode()).hexdigest()


class ChainLink(NamedTuple):  # a tuple: verify makes one per event of the log
    position: int
    content_hash: str
    chain_hash: str


class DigestProjection(TableProjection):
    """A read model of every stored event's content digest, and nothing else of it (the
    chain, the checkpoints' tree): no event needs a meaning, and PostgreSQL computes the
    digests as it reads (read_digests)."""

    topics = None  # every stored event

    def check(self) -> None:
        """Every stored event is hashed as it is: none needs a meaning."""

    def read(self, position: int, stop: int, topics: list[str]) -> list[Any]:
        return read_digests(self.app.recorder, position + 1, stop)

    def decode(self, digests: Sequence[Any]) -> list[tuple[int, Any]]:
        """(position, content digest) pairs as read: nothing to decode."""
        return list(digests)


class ChainProjection(DigestProjection):
    name = "chain"
    version = 1
    table_names = ("ops_chain",)

    def ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.t('ops_chain')} ("
            "position BIGINT PRIMARY KEY, content_hash TEXT NOT NULL, chain_hash TEXT NOT NULL)"
        ]

    def __init__(self, app: Any, views: ViewsMixin) -> None:
        super().__init__(app, views)
        self._compared = 0  # built beside the live chain: every link the same up to here

    def check_beside(self, live: TableProjection, *, whole: bool = False) -> None:
        """The chain is the evidence that the log is what it was: a chain built again
        beside it must hold the same links wherever both reach, or swapping it in
        would make an alteration of the log the new truth. As it is built, the last
        links both hold are compared (a link's hash covers every event before it, so
        an altered log stops the rebuild soon after where it was altered); before the
        swap (`whole`), every link, so a link edited in the live table is seen too."""
        upto = min(live.position(), self.position())
        ours, theirs = self.t("ops_chain"), live.t("ops_chain")
        if whole:
            if upto > self._compared and not same_links(
                self.views, theirs, ours, self._compared, upto
            ):
                self._refuse(theirs, ours, self._compared, upto)
            self._compared = max(self._compared, upto)
        elif upto > self._compared and last_link(self.views, ours, upto) != last_link(
            self.views, theirs, upto
        ):
            self._refuse(theirs, ours, self._compared, upto)

    def _refuse(self, live: str, rebuilt: str, after: int, upto: int) -> None:
        findings = differing_links(self.views, live, rebuilt, after, upto) or [
            (upto, "the chains differ at or before this position")
        ]
        shown = "\n  ".join(f"position {position}: {message}" for position, message in findings)
        raise LogAltered(
            "the hash chain shows the log was altered after it was written; swapping "
            f"in a rebuilt chain would erase that evidence:\n  {shown}\n"
            "Investigate with `pm-ops verify`."
        )

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        table = self.t("ops_chain")
        self.execute(cursor, f"SELECT chain_hash FROM {table} ORDER BY position DESC LIMIT 1")
        row = cursor.fetchone()
        previous = row["chain_hash"] if row else GENESIS
        rows = []
        for position, digest in events:
            content = digest.hex()
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


def last_link(views: ViewsMixin, table: str, upto: int) -> tuple[int, str] | None:
    """(position, chain hash) of a chain table's last link at or before `upto`."""
    with views.read() as cursor:
        views.execute(
            cursor,
            f"SELECT position, chain_hash FROM {table} WHERE position <= %s "
            "ORDER BY position DESC LIMIT 1",
            (upto,),
        )
        row = cursor.fetchone()
    return (int(row["position"]), row["chain_hash"]) if row else None


def _both(live: str, rebuilt: str) -> str:
    """Both tables' links over (after, upto], one row per position (one pass of each)."""
    window = "position > %s AND position <= %s"
    return (
        "SELECT position, MAX(was) AS was, MAX(now) AS now, "
        "MAX(was_link) AS was_link, MAX(now_link) AS now_link FROM ("
        "SELECT position, content_hash AS was, NULL AS now, chain_hash AS was_link, "
        f"NULL AS now_link FROM {live} WHERE {window} UNION ALL "
        "SELECT position, NULL AS was, content_hash AS now, NULL AS was_link, "
        f"chain_hash AS now_link FROM {rebuilt} WHERE {window}) AS links GROUP BY position"
    )


def same_links(views: ViewsMixin, live: str, rebuilt: str, after: int, upto: int) -> bool:
    """Whether two chain tables hold the same links over (after, upto]."""
    with views.read() as cursor:
        views.execute(
            cursor,
            f"{_both(live, rebuilt)} HAVING COUNT(*) < 2 OR MAX(was) <> MAX(now) "
            "OR MAX(was_link) <> MAX(now_link) LIMIT 1",
            (after, upto, after, upto),
        )
        return cursor.fetchone() is None


def differing_links(
    views: ViewsMixin, live: str, rebuilt: str, after: int, upto: int, limit: int = 10
) -> list[tuple[int, str]]:
    """Where two chain tables disagree over positions (after, upto], in the words of
    `check_chain`: the rebuilt one hashes the log as it is now, the live one as it was.
    Events that differ first; a link that differs alone only if no event does (after a
    changed event, every later link differs too)."""
    with views.read() as cursor:
        views.execute(
            cursor,
            f"{_both(live, rebuilt)} HAVING COUNT(*) < 2 OR MAX(was) <> MAX(now) "
            "ORDER BY position LIMIT %s",
            (after, upto, after, upto, limit),
        )
        found = [(r["position"], _difference(r["was"], r["now"])) for r in cursor.fetchall()]
        if found:
            return found
        views.execute(
            cursor,
            f"{_both(live, rebuilt)} HAVING MAX(was_link) <> MAX(now_link) "
            "ORDER BY position LIMIT 1",
            (after, upto, after, upto),
        )
        return [
            (r["position"], "the chain table itself was altered here") for r in cursor.fetchall()
        ]


def _difference(was: str | None, now: str | None) -> str:
    if now is None:
        return "event is missing from the log (deleted)"
    if was is None:
        return (
            "event was not in the log when the chain passed this position "
            "(inserted or renumbered afterwards)"
        )
    return "event was changed after it was recorded"


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
