"""The log's Merkle tree, kept incrementally (projections/merkle.py): against RFC 6962's
published test vectors, and against the RFC's own recursive definitions written out here
independently, for every small tree and random larger ones."""

import os
import random
from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.merkle import (
    STRATUM,
    CompactRange,
    MissingNodes,
    consistency_proof,
    inclusion_proof,
    is_stored,
    tree_root,
)
from projections.transparency import verify_consistency, verify_inclusion
from tests.rfc6962_vectors import (
    RFC_CONSISTENCY,
    RFC_INCLUSION,
    RFC_LEAVES,
    RFC_NODES,
    RFC_ROOTS,
)


class Tree:
    """Leaves appended to a CompactRange, the nodes it completes kept as the tree table
    keeps them (every STRATUM-th level), or every one (as a table built before strata)."""

    def __init__(self, leaves: list[bytes], *, every_level: bool = False) -> None:
        self.leaves = leaves
        self.edge = CompactRange()
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.roots = [self.edge.root()]  # by size
        self.reads: list[list[tuple[int, int]]] = []
        for leaf in leaves:
            for level, index, digest in self.edge.append(leaf):
                assert (level, index) not in self.nodes
                if every_level or is_stored((level, index)):
                    self.nodes[(level, index)] = digest
            self.roots.append(self.edge.root())

    def read(self, nodes: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        self.reads.append(nodes)
        return {node: self.nodes[node] for node in nodes if node in self.nodes}


def random_leaves(count: int) -> list[bytes]:
    return [os.urandom(random.choice([0, 1, 7, 32, 32, 32, 100])) for _ in range(count)]


# --- RFC 6962 §2.1, written as the RFC writes it -------------------------------------------


def split(n: int) -> int:
    """k: the largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return sha256(b"").digest()
    if n == 1:
        return sha256(b"\x00" + d[0]).digest()
    k = split(n)
    return sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    return subproof(m, d, True)


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = split(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


# --- Tests ----------------------------------------------------------------------------------


def test_the_published_roots_and_subtree_hashes() -> None:
    tree, stored = Tree(RFC_LEAVES, every_level=True), Tree(RFC_LEAVES)
    assert [root.hex() for root in tree.roots] == RFC_ROOTS
    assert {node: digest.hex() for node, digest in tree.nodes.items()} == RFC_NODES
    assert set(stored.nodes) == {node for node in RFC_NODES if node[0] in (0, STRATUM)}
    for read in (tree.read, stored.read):
        assert [tree_root(size, read).hex() for size in range(9)] == RFC_ROOTS


@pytest.mark.parametrize(("index", "size"), sorted(RFC_INCLUSION))
def test_the_published_inclusion_proofs(index: int, size: int) -> None:
    tree = Tree(RFC_LEAVES)
    expected = [bytes.fromhex(h) for h in RFC_INCLUSION[(index, size)]]
    assert inclusion_proof(index, size, tree.read) == expected
    verify_inclusion(index, size, RFC_LEAVES[index], expected, bytes.fromhex(RFC_ROOTS[size]))


@pytest.mark.parametrize(("old", "new"), sorted(RFC_CONSISTENCY))
def test_the_published_consistency_proofs(old: int, new: int) -> None:
    tree = Tree(RFC_LEAVES)
    expected = [bytes.fromhex(h) for h in RFC_CONSISTENCY[(old, new)]]
    assert consistency_proof(old, new, tree.read) == expected
    roots = bytes.fromhex(RFC_ROOTS[old]), bytes.fromhex(RFC_ROOTS[new])
    verify_consistency(old, new, *roots, expected)


@pytest.mark.parametrize("every_level", [False, True], ids=["strata", "every-level"])
def test_every_tree_up_to_130_leaves_matches_the_rfc_definitions(every_level: bool) -> None:
    tree = Tree(random_leaves(130), every_level=every_level)
    for size in range(1, 131):
        d = tree.leaves[:size]
        assert tree.roots[size] == mth(d) == tree_root(size, tree.read)
        for index in range(size):
            audit_path = inclusion_proof(index, size, tree.read)
            assert audit_path == path(index, d), (index, size)
            verify_inclusion(index, size, d[index], audit_path, tree.roots[size])
        for old in range(1, size + 1):
            consistency = consistency_proof(old, size, tree.read)
            assert consistency == proof(old, d), (old, size)
            verify_consistency(old, size, tree.roots[old], tree.roots[size], consistency)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(131, 5000), data=st.data())
def test_random_larger_trees_match_the_rfc_definitions(size: int, data: st.DataObject) -> None:
    tree = Tree(random_leaves(size))
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    d = tree.leaves
    assert tree.roots[size] == mth(d) == tree_root(size, tree.read)
    assert inclusion_proof(index, size, tree.read) == path(index, d)
    assert consistency_proof(old, size, tree.read) == proof(old, d)


@pytest.mark.parametrize("size", [1, 2, 3, 63, 64, 65, 1000, 1023, 1024, 1025])
def test_a_root_or_proof_costs_one_read_of_a_handful_of_nodes(size: int) -> None:
    tree = Tree(random_leaves(size))
    index, old = random.randrange(size), random.randint(1, size)
    tree.reads.clear()
    tree_root(size, tree.read)
    inclusion_proof(index, size, tree.read)
    consistency_proof(old, size, tree.read)
    CompactRange.from_stored(size, tree.read)
    assert len(tree.reads) <= 4  # a proof with no hashes at all reads nothing
    # at most 2·log2(n)+1 nodes, each between strata folded from 2^(STRATUM-1) at most
    most = (2 * size.bit_length() + 1) << (STRATUM - 1)
    assert all(len(nodes) <= most for nodes in tree.reads)


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 8, 100, 255, 256, 257, 300])
def test_the_edge_resumes_from_stored_nodes_or_its_saved_state(cut: int) -> None:
    leaves = random_leaves(300)
    whole, first = Tree(leaves), Tree(leaves[:cut])
    for resumed in (
        CompactRange.from_stored(cut, first.read),
        CompactRange.from_state(first.edge.to_state()),
    ):
        assert (resumed.size, resumed.root()) == (cut, whole.roots[cut])
        completed = resumed.extend(leaves[cut:])
        assert resumed.root() == whole.roots[300]
        assert {node[:2] for node in completed if is_stored(node)} == set(whole.nodes) - set(
            first.nodes
        )


@settings(max_examples=40, deadline=None)
@given(start=st.integers(0, 600), count=st.integers(0, 600), data=st.data())
def test_appending_many_at_once_stores_what_appending_one_by_one_stores(
    start: int, count: int, data: st.DataObject
) -> None:
    """The tree projection's loop (append_stored) against `append`: the same leaf hashes,
    the same stored nodes, the same root, and it stops at each size it is asked to."""
    leaves = random_leaves(start + count)
    one_by_one = Tree(leaves)
    edge = CompactRange.from_stored(start, one_by_one.read)
    stops = set(data.draw(st.lists(st.integers(start + 1, start + count + 1), max_size=4)))
    hashes: list[bytes] = []
    nodes: dict[tuple[int, int], bytes] = {}
    while len(hashes) < count:
        appended, stored = edge.append_stored(leaves[start + len(hashes) :], stops)
        hashes += appended
        nodes.update({(level, index): digest for level, index, digest in stored})
        assert edge.size in stops or len(hashes) == count
        assert edge.root() == one_by_one.roots[edge.size]
    assert hashes == [one_by_one.nodes[(0, index)] for index in range(start, start + count)]
    added = {node for node in one_by_one.nodes if node[0] > 0} - set(Tree(leaves[:start]).nodes)
    assert nodes == {node: one_by_one.nodes[node] for node in added}


def test_an_incomplete_store_is_named_not_misread() -> None:
    tree = Tree(random_leaves(20))
    del tree.nodes[(0, 5)], tree.nodes[(0, 17)]
    # leaf 0's path: leaf 1, then [2,4), [4,8), [8,16) and [16,20) folded from their leaves
    with pytest.raises(MissingNodes, match=r"lack 2 of the 19 nodes .*level 0, index 5"):
        inclusion_proof(0, 20, tree.read)
    with pytest.raises(MissingNodes, match="rebuild the tree from the log"):
        CompactRange.from_stored(20, tree.read)


def test_impossible_requests_are_refused_in_words() -> None:
    tree = Tree(random_leaves(5))
    with pytest.raises(ValueError, match="index 5 is outside a tree of 5 leaves"):
        inclusion_proof(5, 5, tree.read)
    with pytest.raises(ValueError, match="a tree of 6 leaves cannot be the start of one of 5"):
        consistency_proof(6, 5, tree.read)
    with pytest.raises(ValueError, match="cannot have -1 leaves"):
        tree_root(-1, tree.read)
    with pytest.raises(ValueError, match="corrupt"):
        CompactRange.from_state(tree.edge.to_state()[:-1])
    assert consistency_proof(0, 5, tree.read) == consistency_proof(5, 5, tree.read) == []
    assert inclusion_proof(0, 1, tree.read) == []
    assert CompactRange.from_stored(0, tree.read).root() == tree_root(0, tree.read) == tree.roots[0]
    assert tree.reads == []  # nothing to read, no query
