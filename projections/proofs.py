"""Proofs for auditors (SPEC §10): that an event is in a signed checkpoint's tree, and
that one checkpoint's tree is the start of another's. O(log n) reads each, from the tree
table; an auditor checks them with projections/transparency.py alone, trusting only the
verifier key: a proof made from an altered tree does not check out."""

import base64
from typing import Any

from projections.chain import content_hash
from projections.checkpoints import StoredCheckpoint, TreeView
from projections.merkle import consistency_proof, inclusion_proof
from projections.replay import notifications


class ProofUnavailable(Exception):
    """No proof can be made for what was asked; the message says why and what to do."""


def inclusion_document(
    app: Any, tree: TreeView, position: int, size: int | None = None
) -> dict[str, Any]:
    """`pm-ops checkpoints prove --position P [--size N]`: the event at a log position
    in the tree of the checkpoint of size N (default the latest)."""
    checkpoint = _checkpoint(tree, size)
    with tree.views.read() as cursor:
        leaf = tree.leaf_at(cursor, position)
        if leaf is None:
            raise ProofUnavailable(
                f"no event at log position {position} is in the tree yet (the checkpoints "
                "projection may be behind, or the position holds no event)"
            )
        index = leaf[0]
        if index >= checkpoint.size:
            raise ProofUnavailable(
                f"the event at position {position} is leaf {index + 1}; the checkpoint of size "
                f"{checkpoint.size} does not cover it yet (a later checkpoint will)"
            )
        proof = inclusion_proof(index, checkpoint.size, tree.reader(cursor))
    [note] = list(notifications(app, start=position, stop=position))
    return {
        "position": position,
        "index": index,
        "tree_size": checkpoint.size,
        "leaf": content_hash(note),
        "proof": [step.hex() for step in proof],
        "checkpoint": checkpoint.note.decode(),
        "event": {
            "position": note.id,
            "originator_id": str(note.originator_id),
            "originator_version": note.originator_version,
            "topic": note.topic,
            "state": base64.b64encode(bytes(note.state)).decode(),
        },
    }


def consistency_document(tree: TreeView, old: int, new: int) -> dict[str, Any]:
    """`pm-ops checkpoints consistency --from N --to M`: both must be signed checkpoints."""
    if old > new:
        raise ProofUnavailable(f"--from {old} is after --to {new}: the older tree comes first")
    first, second = _checkpoint(tree, old), _checkpoint(tree, new)
    with tree.views.read() as cursor:
        proof = consistency_proof(old, new, tree.reader(cursor))
    return {
        "from": old,
        "to": new,
        "proof": [step.hex() for step in proof],
        "from_checkpoint": first.note.decode(),
        "to_checkpoint": second.note.decode(),
    }


def _checkpoint(tree: TreeView, size: int | None) -> StoredCheckpoint:
    found = tree.latest() if size is None else tree.checkpoint(size)
    if found is not None:
        return found
    if size is None:
        raise ProofUnavailable(
            "no checkpoint has been signed yet (is OPS_CHECKPOINT_KEY set, and the "
            "checkpoints projection running?)"
        )
    raise ProofUnavailable(
        f"no checkpoint of size {size} was signed; `pm-ops checkpoints list` shows those that were"
    )
