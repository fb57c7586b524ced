"""The log's Merkle tree (RFC 6962), kept incrementally: each appended leaf yields the perfect
subtrees it completed, for the caller to store by (level, index); roots and proofs are then
made from those stored hashes in one read each, as Go's tlog does with its stored hashes.
No SQL here: callers pass a NodeReader that reads many nodes in one query.

Node (level L, index i) is the hash of the perfect subtree over leaves [i·2^L, (i+1)·2^L);
level 0 holds the leaf hashes. Only every STRATUM-th level need be stored (`is_stored`):
a node between two is folded from the at most 2^(STRATUM-1) stored ones beneath it, as
Trillian keeps its tree in strata. That stores a sixteenth of a node per leaf instead of
one; a store that keeps every level (trees built before) reads the same. The hashing and
the checking of proofs live in projections/transparency.py, the file auditors run on its
own."""

from collections.abc import Callable, Container, Iterable, Sequence

from projections.transparency import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash

Node = tuple[int, int]  # (level, index)
StoredNode = tuple[int, int, bytes]  # (level, index, hash)
NodeReader = Callable[[list[Node]], dict[Node, bytes]]

# Levels 0, 4, 8, ... are stored; a node between is at most 8 stored ones to fold, so a
# proof still reads a few dozen rows while the tree writes 1/16 of a node row per leaf.
STRATUM = 4


def is_stored(node: StoredNode | Node) -> bool:
    """Whether a store keeps this node (the others are folded from those beneath them)."""
    return node[0] % STRATUM == 0


class MissingNodes(LookupError):
    """The stored hashes lack nodes a root or proof needs: the tree table is incomplete."""


class CompactRange:
    """The right edge of the tree of the first `size` leaves: one perfect subtree's hash per
    set bit of `size`, largest first. Enough to append and to give the root, in O(log n)."""

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[StoredNode]:
        """Adds one leaf (its data, e.g. an event's 32-byte content hash); returns the perfect
        nodes it completed, its own leaf hash (level 0) first, for the caller to store."""
        index = self._size
        [digest], above = self._append([leaf], (), every_level=True)
        return [(0, index, digest), *above]

    def append_stored(
        self, leaves: Sequence[bytes], stop_at: Container[int] = ()
    ) -> tuple[list[bytes], list[StoredNode]]:
        """Appends the leaves in turn until they run out or the tree reaches a size in
        `stop_at` (for the caller to check its root there). Returns the leaf hashes
        appended, in order, and the nodes above them that a store keeps (is_stored): what
        the checkpoint tree writes for a batch, in one loop rather than a call per event."""
        return self._append(leaves, stop_at, every_level=False)

    def _append(
        self, leaves: Sequence[bytes], stop_at: Container[int], *, every_level: bool
    ) -> tuple[list[bytes], list[StoredNode]]:
        hashes, size = self._hashes, self._size
        appended: list[bytes] = []
        above: list[StoredNode] = []
        for leaf in leaves:
            digest = leaf_hash(leaf)
            appended.append(digest)
            level, index = 0, size
            while index & 1:  # each trailing 1 bit closes a subtree one level up
                digest = node_hash(hashes.pop(), digest)
                level, index = level + 1, index >> 1
                if every_level or not level % STRATUM:
                    above.append((level, index, digest))
            hashes.append(digest)
            size += 1
            if size in stop_at:
                break
        self._size = size
        return appended, above

    def extend(self, leaves: Iterable[bytes]) -> list[StoredNode]:
        """Appends each leaf in turn; returns all the nodes they completed."""
        completed: list[StoredNode] = []
        for leaf in leaves:
            completed += self.append(leaf)
        return completed

    def root(self) -> bytes:
        """The RFC 6962 root of the first `size` leaves (SHA-256 of nothing when empty)."""
        return _fold(self._hashes) if self._hashes else EMPTY_ROOT

    def to_state(self) -> bytes:
        """8 bytes of size, big-endian, then the edge's hashes: one row's worth."""
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def from_state(cls, state: bytes) -> "CompactRange":
        """The edge to_state saved."""
        size = int.from_bytes(state[:8], "big") if len(state) >= 8 else -1
        if size < 0 or len(state) != 8 + HASH_SIZE * size.bit_count():
            raise ValueError("the saved tree edge is corrupt: its length does not fit its size")
        return cls._of(size, [state[at : at + HASH_SIZE] for at in range(8, len(state), HASH_SIZE)])

    @classmethod
    def from_stored(cls, size: int, read: NodeReader) -> "CompactRange":
        """The edge of the first `size` leaves, rebuilt from stored nodes in one read."""
        if size < 0:
            raise ValueError(f"a tree cannot have {size} leaves")
        nodes = _perfect_nodes(0, size)
        stored = _read(read, nodes)
        return cls._of(size, [stored[node] for node in nodes])

    @classmethod
    def _of(cls, size: int, hashes: list[bytes]) -> "CompactRange":
        edge = cls()
        edge._size, edge._hashes = size, hashes
        return edge


def tree_root(size: int, read: NodeReader) -> bytes:
    """The RFC 6962 root of the first `size` leaves, from stored nodes in one read."""
    if size < 0:
        raise ValueError(f"a tree cannot have {size} leaves")
    return _range_hashes([(0, size)], read)[0] if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH: the audit path of leaf `index` in the tree of `size` leaves
    (what Go's tlog.ProveRecord gives), from stored nodes in one read."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of {size} leaves")
    siblings = []  # the subtree not taken at each split, from the root down
    lo, hi = 0, size
    while hi - lo > 1:
        split = lo + _largest_power_below(hi - lo)
        if index < split:
            siblings.append((split, hi))
            hi = split
        else:
            siblings.append((lo, split))
            lo = split
    return _range_hashes(siblings[::-1], read)  # the path lists the leaf's sibling first


def consistency_proof(old: int, new: int, read: NodeReader) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(old, D[new]): that the tree of `old` leaves is the start of the
    tree of `new` (what Go's tlog.ProveTree gives), from stored nodes in one read. Empty when
    `old` is 0 or `new`: nothing to prove beyond the roots."""
    if not 0 <= old <= new:
        raise ValueError(f"a tree of {old} leaves cannot be the start of one of {new}")
    if old in (0, new):
        return []
    subtrees = []  # SUBPROOF's MTH terms, from the root down
    lo, hi = 0, new
    while old != hi:
        split = lo + _largest_power_below(hi - lo)
        if old <= split:
            subtrees.append((split, hi))
            hi = split
        else:
            subtrees.append((lo, split))
            lo = split
    if lo:  # the old tree's last subtree is not the old tree itself: the verifier needs it
        subtrees.append((lo, hi))
    return _range_hashes(subtrees[::-1], read)


def _largest_power_below(count: int) -> int:
    """RFC 6962's split k: the largest power of two smaller than `count` (> 1)."""
    return 1 << ((count - 1).bit_length() - 1)


def _perfect_nodes(lo: int, hi: int) -> list[Node]:
    """The perfect subtrees making up leaves [lo, hi), largest first. Every range an RFC 6962
    split produces starts at a multiple of its first subtree's width, so each is one node."""
    nodes = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def _fold(hashes: list[bytes]) -> bytes:
    """The hash of a range from its perfect subtrees, largest first: RFC 6962 puts each
    smaller one under the right of the larger."""
    digest = hashes[-1]
    for left in reversed(hashes[:-1]):
        digest = node_hash(left, digest)
    return digest


def _range_hashes(ranges: list[tuple[int, int]], read: NodeReader) -> list[bytes]:
    """The RFC 6962 hash of each leaf range, from one read of all their perfect nodes."""
    parts = [_perfect_nodes(lo, hi) for lo, hi in ranges]
    stored = _read(read, [node for part in parts for node in part])
    return [_fold([stored[node] for node in part]) for part in parts]


def _read(read: NodeReader, nodes: list[Node]) -> dict[Node, bytes]:
    """The nodes' hashes in one call of `read` (none when no node is needed): those of a
    level between strata are folded from the stored nodes beneath them."""
    if not nodes:
        return {}
    beneath = {node: _stored_beneath(node) for node in nodes}
    wanted = list(dict.fromkeys(base for bases in beneath.values() for base in bases))
    stored = read(wanted)
    missing = [node for node in wanted if node not in stored]
    if missing:
        level, index = missing[0]
        raise MissingNodes(
            f"the tree's stored hashes lack {len(missing)} of the {len(wanted)} nodes needed "
            f"(the first: level {level}, index {index}); rebuild the tree from the log"
        )
    # bytes(): a driver may give memoryviews
    return {
        node: _fold_up([bytes(stored[base]) for base in bases]) for node, bases in beneath.items()
    }


def _stored_beneath(node: Node) -> list[Node]:
    """The stored nodes whose hashes make this one, left to right (itself if stored)."""
    level, index = node
    base = level - level % STRATUM
    width = 1 << (level - base)
    return [(base, index * width + offset) for offset in range(width)]


def _fold_up(hashes: list[bytes]) -> bytes:
    """The hash of a perfect subtree from its 2^k nodes at one level, left to right."""
    while len(hashes) > 1:
        hashes = [node_hash(hashes[at], hashes[at + 1]) for at in range(0, len(hashes), 2)]
    return hashes[0]
