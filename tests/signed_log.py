"""A log of random events in a Merkle tree, signed as pm-ops signs its checkpoints, and the
proof documents `pm-ops checkpoints prove` / `consistency` print for it (SPEC §10), built
from projections/merkle.py and projections/transparency.py alone."""

import base64
import os
import random
import uuid
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from projections.merkle import CompactRange, Node, consistency_proof, inclusion_proof, tree_root
from projections.transparency import checkpoint_text, event_leaf, sign_note, verifier_key


class SignedLog:
    def __init__(
        self, size: int, key: Ed25519PrivateKey | None = None, origin: str | None = None
    ) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        self.origin = origin or f"ops-{uuid.uuid4().hex[:8]}.example.com/pm-ops"
        self.verifier = verifier_key(self.origin, self.key.public_key())
        self.events = list(random_events(size))
        self.leaves = [event_leaf(**event) for event in self.events]
        self.nodes: dict[Node, bytes] = {}
        for level, index, digest in CompactRange().extend(self.leaves):
            self.nodes[(level, index)] = digest

    def read(self, nodes: list[Node]) -> dict[Node, bytes]:
        return {node: self.nodes[node] for node in nodes if node in self.nodes}

    def checkpoint(self, size: int) -> str:
        text = checkpoint_text(self.origin, size, tree_root(size, self.read))
        return sign_note(text, self.origin, self.key).decode()

    def inclusion(self, index: int, size: int, with_event: bool = False) -> dict[str, Any]:
        event = self.events[index]
        document = {
            "position": event["position"],
            "index": index,
            "tree_size": size,
            "leaf": self.leaves[index].hex(),
            "proof": [item.hex() for item in inclusion_proof(index, size, self.read)],
            "checkpoint": self.checkpoint(size),
        }
        if with_event:
            document["event"] = {**event, "state": base64.b64encode(event["state"]).decode()}
        return document

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        return {
            "from": old,
            "to": new,
            "proof": [item.hex() for item in consistency_proof(old, new, self.read)],
            "from_checkpoint": self.checkpoint(old),
            "to_checkpoint": self.checkpoint(new),
        }


def random_events(count: int) -> Iterator[dict[str, Any]]:
    """Stored events as the leaves see them: positions with gaps, as a log may have."""
    position = random.randint(1, 50)
    for _ in range(count):
        yield {
            "position": position,
            "originator_id": str(uuid.uuid4()),
            "originator_version": random.randint(1, 9),
            "topic": random.choice(["aggregates.person:Person.MemberAdded", "api:Token.Issued"]),
            "state": os.urandom(random.randint(0, 64)),
        }
        position += random.choice([1, 1, 1, 2, 7])
