"""The checkpoints projection (SPEC §10): the log's Merkle tree, kept incrementally, and a
signed checkpoint of it every OPS_CHECKPOINT_INTERVAL seconds that the log grew.

- Leaf i is the i-th stored event's content hash (the hash chain's, chain.py), in log
  order; positions may have gaps, so `ops_tree_leaves` maps each leaf's index to its
  position and keeps its leaf hash; `ops_tree_nodes` keeps the perfect subtrees' hashes
  at every fourth level above the leaves (merkle.STRATUM: the levels between are folded
  from them), so a root or a proof is one indexed read of a few dozen rows, and the tree
  writes a row per event and a sixteenth (projections/merkle.py).
- The tree's right edge (a compact range: O(log n) hashes) is held in memory while
  following and rebuilt from the stored nodes when the runner starts.
- `ops_checkpoints` keeps every signed note; it is never dropped by a rebuild. A tree
  built again passes each published checkpoint's size on its way, and stops with
  LogAltered the moment its root differs: an altered log never becomes the new truth.
- The signing key is read from OPS_CHECKPOINT_KEY's file whenever a checkpoint is
  signed, never stored, never logged; without it the projection is off.
"""

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from projections.chain import DigestProjection
from projections.feed import FeedOff
from projections.merkle import CompactRange, Node, tree_root
from projections.projection import Halted, LogAltered, TableProjection
from projections.store import ViewsMixin
from projections.times import iso
from projections.transparency import checkpoint_text, sign_note, verifier_key

log = logging.getLogger("pm_ops.projections")

NAME = "checkpoints"
KEY_VARIABLE = "OPS_CHECKPOINT_KEY"
# PostgreSQL's COPY BINARY framing (signature, flags, header extension; rows; -1 fields),
# and a row of each tree table: its field count, then each field's length and value.
COPY_HEADER, COPY_TRAILER = b"PGCOPY\n\xff\r\n\x00" + bytes(8), b"\xff\xff"
LEAF_ROW = struct.Struct("!hiqiqi32s")  # 3 fields: idx bigint, position bigint, 32-byte hash
NODE_ROW = struct.Struct("!hihiqi32s")  # 3 fields: level smallint, idx bigint, 32-byte hash


class KeyUnavailable(Halted):
    """The signing key cannot be used; the message names the variable and says why."""


@dataclass(frozen=True)
class CheckpointSettings:
    """What the checkpoints and their witnesses need, built from the environment."""

    key_path: str
    origin: str
    interval: float = 60.0
    directory: str | None = None
    s3_url: str | None = None
    s3_endpoint: str | None = None
    retention_days: int = 2557
    slack_channel: str | None = None
    tsa_urls: tuple[str, ...] = ()
    tsa_roots: str | None = None


def load_key(path: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file (PKCS#8, as `openssl genpkey -algorithm ed25519`
    writes it). Errors name the variable and the file, never the key."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise KeyUnavailable(
            f"{KEY_VARIABLE}: cannot read {path}: {error.strerror or error}"
        ) from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyUnavailable(
            f"{KEY_VARIABLE}: {path} is not an unencrypted PEM private key "
            "(make one with: openssl genpkey -algorithm ed25519 -out FILE)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyUnavailable(f"{KEY_VARIABLE}: {path} holds a key that is not Ed25519")
    return key


class Signer:
    """Signs checkpoints with the key in its file, read afresh for each signature (a key
    file removed or replaced at run time is noticed at the next checkpoint)."""

    def __init__(self, key_path: str, origin: str) -> None:
        self.key_path = key_path
        self.origin = origin

    def verifier_key(self) -> str:
        return verifier_key(self.origin, load_key(self.key_path).public_key())

    def sign(self, size: int, root: bytes) -> bytes:
        key = load_key(self.key_path)
        return sign_note(checkpoint_text(self.origin, size, root), self.origin, key)


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: bytes
    at: str  # when it was signed (fixed-width UTC)
    position: int  # the log position of its last leaf


class TreeProjection(DigestProjection):
    """The tree table follows every event; checkpoints are signed by the active runner."""

    name = NAME
    version = 1
    table_names = ("ops_tree_leaves", "ops_tree_nodes")  # never ops_checkpoints
    # The tree is read when a checkpoint is signed (every OPS_CHECKPOINT_INTERVAL) and
    # its lag is held under 2 s: fewer, fuller transactions than a read model's, as each
    # batch's round trips, not its events, were most of what it cost beside the API.
    live_batch = 2000
    gather_seconds = 0.5

    def __init__(
        self,
        app: Any,
        views: ViewsMixin,
        signer: Signer | None = None,
        *,
        interval: float = 60.0,
        published: Callable[[], dict[int, bytes]] | None = None,
    ) -> None:
        super().__init__(app, views)
        self.signer = signer
        self.interval = interval
        self.tree = TreeView(views)
        # Roots the tree must agree with when it reaches their size: the checkpoints in
        # the table, and the latest each witness holds (they outlive the database).
        self._published = published or dict
        self._expected: dict[int, bytes] | None = None
        self._edge: CompactRange | None = None
        self._last_signed = 0.0

    @classmethod
    def follower(cls, app: Any, views: ViewsMixin, settings: Any) -> "TreeProjection":
        """The runner's: it signs, so it needs the key (off without OPS_CHECKPOINT_KEY)."""
        checkpoints: CheckpointSettings | None = settings.checkpoints
        if checkpoints is None:
            raise FeedOff("off: set OPS_CHECKPOINT_KEY to sign checkpoints (SPEC §10)")
        from projections.feeds import published_roots  # feeds import this module

        return cls(
            app,
            views,
            Signer(checkpoints.key_path, checkpoints.origin),
            interval=checkpoints.interval,
            published=lambda: published_roots(checkpoints),
        )

    def beside(self, views: ViewsMixin) -> "TreeProjection":
        """The tree built again beside this one: held to the same published roots as
        it is built, and never signing (the live runner signs)."""
        return TreeProjection(self.app, views, published=self._published)

    def check_beside(self, live: TableProjection, *, whole: bool = False) -> None:
        """Checkpoints are signed from the live tree, including any signed while this
        one was built after it had passed their size: equal roots at the size both
        reach mean equal leaves up to it, so this tree agrees with all of them."""
        live_tree = TreeView(live.views)
        size = min(live_tree.stored_size(), self.tree.stored_size())
        if size and self.tree.root_at(size) != live_tree.root_at(size):
            raise LogAltered(
                f"the log no longer matches the tree its checkpoints were signed from: its "
                f"first {size} events hash to another root, so an event among them was "
                "changed, removed or inserted. The rebuilt tree is not swapped in; "
                "investigate with `pm-ops verify --checkpoints`."
            )

    def ddl(self) -> list[str]:
        leaves, nodes = self.tables()
        blob = "BYTEA" if self.views.is_postgres else "BLOB"
        return [
            f"CREATE TABLE IF NOT EXISTS {leaves} ("
            f"idx BIGINT PRIMARY KEY, position BIGINT NOT NULL UNIQUE, hash {blob} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {nodes} ("
            f"level SMALLINT NOT NULL, idx BIGINT NOT NULL, hash {blob} NOT NULL, "
            "PRIMARY KEY (level, idx))",
            *checkpoint_ddl(self.views),
        ]

    def on_activate(self) -> None:
        self._edge, self._expected = None, None  # read again from what is stored
        super().on_activate()

    def reset(self) -> None:
        super().reset()
        self._edge, self._expected = None, None

    def expected(self) -> dict[int, bytes]:
        if self._expected is None:
            stored = {c.size: c.root for c in self.tree.checkpoints()}
            self._expected = {**self._published(), **stored}
        return self._expected

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        edge = self._edge_in(cursor)
        expected = self.expected()
        first = edge.size
        digests = [digest for _, digest in events]
        hashes: list[bytes] = []
        nodes: list[tuple[int, int, bytes]] = []
        while len(hashes) < len(digests):  # stopping at each published size on the way
            appended, stored = edge.append_stored(digests[len(hashes) :], expected)
            hashes += appended
            nodes += stored
            if edge.size in expected:
                self._check(edge, expected[edge.size], events[len(hashes) - 1][0])
        self.tree.store(cursor, first, [position for position, _ in events], hashes, nodes)

    def _check(self, edge: CompactRange, root: bytes, position: int) -> None:
        if root != edge.root():
            self._edge = None
            raise LogAltered(
                f"the log no longer matches the published checkpoint of size {edge.size}: "
                f"its first {edge.size} events (up to position {position}) hash to another "
                "root, so an event before it was changed, removed or inserted after it was "
                "signed. The tree is not rebuilt over it; investigate with "
                "`pm-ops verify --checkpoints`."
            )

    def _edge_in(self, cursor: Any) -> CompactRange:
        """The tree's right edge, as stored (read again whenever not known to be current)."""
        size = self.tree.size(cursor)
        if self._edge is None or self._edge.size != size:
            self._edge = CompactRange.from_stored(size, self.tree.reader(cursor))
        return self._edge

    def catch_up(self, **options: Any) -> int:
        try:
            done = super().catch_up(**options)
        except Exception:
            self._edge = None  # a failed batch may have moved it ahead of the store
            raise
        if self.signer is not None and self._rebuilding_to is None:
            try:
                self.sign_if_due()
            except KeyUnavailable as halt:
                raise self.halted(halt) from None
        return done

    def sign_if_due(self, *, force: bool = False) -> StoredCheckpoint | None:
        """A checkpoint of the tree as stored, if the interval passed and the log grew."""
        if not force and time.monotonic() - self._last_signed < self.interval:
            return None
        assert self.signer is not None
        with self.views.read() as cursor:
            size = self.tree.size(cursor)
            latest = self.tree.latest(cursor)
            if size == 0 or (latest is not None and latest.size >= size):
                self._last_signed = time.monotonic()
                return None
            root = tree_root(size, self.tree.reader(cursor))
            position = self.tree.position_of(cursor, size - 1)
        note = self.signer.sign(size, root)
        signed = StoredCheckpoint(size, root, note, iso(datetime.now(UTC)), position)
        self.tree.record(signed)
        self.expected()[size] = root
        self._last_signed = time.monotonic()
        log.info("checkpoints: signed the tree of %s events (up to position %s)", size, position)
        return signed


def copy_binary(cursor: Any, statement: str, rows: bytes) -> None:
    with cursor.copy(f"{statement} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_HEADER + rows + COPY_TRAILER)


def checkpoint_ddl(views: ViewsMixin) -> list[str]:
    blob = "BYTEA" if views.is_postgres else "BLOB"
    return [
        f"CREATE TABLE IF NOT EXISTS {views.table('ops_checkpoints')} ("
        f"size BIGINT PRIMARY KEY, root {blob} NOT NULL, note TEXT NOT NULL, "
        "at TEXT NOT NULL, position BIGINT NOT NULL)"
    ]


class TreeView:
    """The tree's tables and the signed checkpoints: its writes and its queries."""

    def __init__(self, views: ViewsMixin) -> None:
        self.views = views

    def size(self, cursor: Any) -> int:
        self.views.execute(
            cursor, f"SELECT MAX(idx) AS top FROM {self.views.table('ops_tree_leaves')}"
        )
        row = cursor.fetchone()
        return 0 if row is None or row["top"] is None else int(row["top"]) + 1

    def reader(self, cursor: Any) -> Callable[[list[Node]], dict[Node, bytes]]:
        """A merkle.NodeReader: many nodes in one query a table (level 0 is the leaves)."""

        def read(nodes: list[Node]) -> dict[Node, bytes]:
            found: dict[Node, bytes] = {}
            leaves = [index for level, index in nodes if level == 0]
            upper = [(level, index) for level, index in nodes if level > 0]
            if leaves:
                table = self.views.table("ops_tree_leaves")
                if self.views.is_postgres:
                    cursor.execute(f"SELECT idx, hash FROM {table} WHERE idx = ANY(%s)", [leaves])
                else:
                    marks = ", ".join("?" * len(leaves))
                    cursor.execute(f"SELECT idx, hash FROM {table} WHERE idx IN ({marks})", leaves)
                for row in cursor.fetchall():
                    found[(0, int(row["idx"]))] = bytes(row["hash"])
            if upper:
                table = self.views.table("ops_tree_nodes")
                if self.views.is_postgres:
                    cursor.execute(
                        "SELECT n.level, n.idx, n.hash FROM unnest(%s::smallint[], %s::bigint[]) "
                        f"AS k(level, idx) JOIN {table} n ON n.level = k.level AND n.idx = k.idx",
                        [[level for level, _ in upper], [index for _, index in upper]],
                    )
                else:
                    marks = ", ".join("(?, ?)" for _ in upper)
                    cursor.execute(
                        f"SELECT level, idx, hash FROM {table} WHERE (level, idx) IN "
                        f"(VALUES {marks})",
                        [value for node in upper for value in node],
                    )
                for row in cursor.fetchall():
                    found[(int(row["level"]), int(row["idx"]))] = bytes(row["hash"])
            return found

        return read

    def store(
        self,
        cursor: Any,
        first: int,
        positions: list[int],
        hashes: list[bytes],
        nodes: list[tuple[int, int, bytes]],
    ) -> None:
        """New leaves (the leaf hashes of the events at these positions, indexed from
        `first`) and nodes (level, index, hash): on PostgreSQL one binary COPY each (the
        rows are new: their indexes follow the stored size), on SQLite `executemany`."""
        leaves_table = self.views.table("ops_tree_leaves")
        nodes_table = self.views.table("ops_tree_nodes")
        indexes = range(first, first + len(hashes))
        if not self.views.is_postgres:
            leaves = zip(indexes, positions, hashes, strict=True)
            cursor.executemany(f"INSERT INTO {leaves_table} VALUES (?, ?, ?)", leaves)
            cursor.executemany(f"INSERT INTO {nodes_table} VALUES (?, ?, ?)", nodes)
            return
        leaf_row, node_row = LEAF_ROW.pack, NODE_ROW.pack
        if hashes:
            rows = zip(indexes, positions, hashes, strict=True)
            payload = b"".join([leaf_row(3, 8, i, 8, p, 32, h) for i, p, h in rows])
            copy_binary(cursor, f"COPY {leaves_table} (idx, position, hash)", payload)
        if nodes:
            payload = b"".join([node_row(3, 2, level, 8, i, 32, h) for level, i, h in nodes])
            copy_binary(cursor, f"COPY {nodes_table} (level, idx, hash)", payload)

    def stored_size(self) -> int:
        with self.views.read() as cursor:
            return self.size(cursor)

    def root_at(self, size: int) -> bytes:
        """The root of the first `size` leaves (stored ones): a tree only grows, so the
        root at a size never changes once stored."""
        with self.views.read() as cursor:
            return tree_root(size, self.reader(cursor))

    def position_of(self, cursor: Any, index: int) -> int:
        self.views.execute(
            cursor,
            f"SELECT position FROM {self.views.table('ops_tree_leaves')} WHERE idx = %s",
            (index,),
        )
        row = cursor.fetchone()
        return int(row["position"])

    def leaf_at(self, cursor: Any, position: int) -> tuple[int, bytes] | None:
        """(index, leaf hash) of the event at a log position, None if not in the tree."""
        self.views.execute(
            cursor,
            f"SELECT idx, hash FROM {self.views.table('ops_tree_leaves')} WHERE position = %s",
            (position,),
        )
        row = cursor.fetchone()
        return None if row is None else (int(row["idx"]), bytes(row["hash"]))

    # --- signed checkpoints ---------------------------------------------------

    def record(self, checkpoint: StoredCheckpoint) -> None:
        with self.views.write() as cursor:
            self.views.execute(
                cursor,
                f"INSERT INTO {self.views.table('ops_checkpoints')} "
                "(size, root, note, at, position) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (size) DO NOTHING",
                (
                    checkpoint.size,
                    checkpoint.root,
                    checkpoint.note.decode(),
                    checkpoint.at,
                    checkpoint.position,
                ),
            )

    def checkpoints(self, *, after: int = 0, limit: int | None = None) -> list[StoredCheckpoint]:
        statement = (
            "SELECT size, root, note, at, position FROM "
            f"{self.views.table('ops_checkpoints')} WHERE size > %s ORDER BY size"
        )
        params: list[Any] = [after]
        if limit is not None:
            statement += " LIMIT %s"
            params.append(limit)
        with self.views.read() as cursor:
            self.views.execute(cursor, statement, params)
            return [_checkpoint(row) for row in cursor.fetchall()]

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        with self.views.read() as cursor:
            self.views.execute(
                cursor,
                "SELECT size, root, note, at, position FROM "
                f"{self.views.table('ops_checkpoints')} WHERE size = %s",
                (size,),
            )
            row = cursor.fetchone()
        return None if row is None else _checkpoint(row)

    def latest(self, cursor: Any | None = None) -> StoredCheckpoint | None:
        statement = (
            "SELECT size, root, note, at, position FROM "
            f"{self.views.table('ops_checkpoints')} ORDER BY size DESC LIMIT 1"
        )
        if cursor is None:  # the witnesses' head, asked a few times a second
            row = self.views.read_row(statement)
        else:
            self.views.execute(cursor, statement)
            row = cursor.fetchone()
        return None if row is None else _checkpoint(row)

    def head(self) -> int:
        latest = self.latest()
        return latest.size if latest is not None else 0


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(
        int(row["size"]), bytes(row["root"]), row["note"].encode(), row["at"], int(row["position"])
    )
