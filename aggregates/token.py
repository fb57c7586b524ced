import hashlib
import hmac
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from aggregates.ids import derived_id


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Token(Aggregate):
    """An API token. Only the secret's hash is kept; the id is derived from the
    name, so names are unique for ever (a revoked name is not reissued)."""

    @staticmethod
    def create_id(name: str, **_: Any) -> UUID:
        return derived_id("token", name)

    @event("Issued")
    def __init__(
        self,
        name: str,
        actor: str,
        scopes: list[str],
        allow_cidrs: list[str],
        rate_limit: int | None,
        cio_signing_key: str | None,
        secret_hash: str,
        meta: dict[str, Any],
        sealed_signing_key: str | None = None,
    ) -> None:
        self.name = name
        self.actor = actor
        self.scopes = list(scopes)
        self.allow_cidrs = list(allow_cidrs)
        self.rate_limit = rate_limit
        self.cio_signing_key = cio_signing_key  # in clear: only in tokens issued by 0.1
        self.sealed_signing_key = sealed_signing_key  # encrypted (commands/sealing.py)
        self.secret_hash = secret_hash
        self.revoked = False

    @event("Revoked")
    def revoke(self, meta: dict[str, Any]) -> None:
        self.revoked = True

    @event("Rotated")
    def rotate(self, secret_hash: str, meta: dict[str, Any]) -> None:
        self.secret_hash = secret_hash

    @property
    def requires_signature(self) -> bool:
        return bool(self.cio_signing_key or self.sealed_signing_key)

    def accepts(self, secret: str) -> bool:
        """Constant-time check of a presented secret against the stored hash."""
        matches = hmac.compare_digest(self.secret_hash, hash_secret(secret))
        return matches and not self.revoked
