"""Deterministic aggregate ids: creating an aggregate twice clashes in the store."""

from functools import lru_cache
from hashlib import sha1
from uuid import UUID

NAMESPACE = UUID("6f1c3a52-6c1e-4c55-9d1c-5a0f1f1e0b7a")
NAMESPACE_BYTES = NAMESPACE.bytes
# uuid.UUID(version=5) on 128 bits: clear the version and variant bits, then set them.
UUID5_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
UUID5_SET = (5 << 76) | (0x8000 << 48)


# An id is derived again whenever its aggregate is created or read: remember recent ones.
@lru_cache(maxsize=16_384, typed=True)
def derived_id(kind: str, *parts: object) -> UUID:
    """uuid5(NAMESPACE, "kind:part:...")."""
    return UUID(bytes=derived_id_bytes(kind, *parts))


def derived_id_bytes(kind: str, *parts: object) -> bytes:
    """derived_id's 16 bytes, computed as uuid.uuid5 does but without making a UUID (nor
    its per-call import): an import of a million people derives two million ids, and
    uuid5 alone was a tenth of its time."""
    name = kind + ":" + str(parts[0]) if len(parts) == 1 else ":".join([kind, *map(str, parts)])
    digest = sha1(NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()
    return ((int.from_bytes(digest[:16]) & UUID5_CLEAR) | UUID5_SET).to_bytes(16)
