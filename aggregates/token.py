import hashlib
import hmac
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from aggregates.ids import derived_id

OPERATION_SCOPES = ("community:add", "code:set")
AUDIT_SCOPE = "audit:read"  # opens the auditors' console, and nothing else
SCOPES = (*OPERATION_SCOPES, AUDIT_SCOPE)


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
    ) -> None:
        self.name = name
        self.actor = actor
        self.scopes = list(scopes)
        self.allow_cidrs = list(allow_cidrs)
        self.rate_limit = rate_limit
        self.cio_signing_key = cio_signing_key
        self.secret_hash = secret_hash
        self.revoked = False

    @event("Revoked")
    def revoke(self, meta: dict[str, Any]) -> None:
        self.revoked = True

    @event("Rotated")
    def rotate(self, secret_hash: str, meta: dict[str, Any]) -> None:
        self.secret_hash = secret_hash

    def accepts(self, secret: str) -> bool:
        """Constant-time check of a presented secret against the stored hash."""
        matches = hmac.compare_digest(self.secret_hash, hash_secret(secret))
        return matches and not self.revoked
