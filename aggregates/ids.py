"""Deterministic aggregate ids: creating an aggregate twice clashes in the store."""

from functools import lru_cache
from uuid import UUID, uuid5

NAMESPACE = UUID("6f1c3a52-6c1e-4c55-9d1c-5a0f1f1e0b7a")


# An id is derived again whenever its aggregate is created or read: remember recent ones.
@lru_cache(maxsize=16_384, typed=True)
def derived_id(kind: str, *parts: object) -> UUID:
    return uuid5(NAMESPACE, ":".join([kind, *(str(p) for p in parts)]))
