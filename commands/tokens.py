"""Engineering's token commands: issue, revoke, rotate, list. Tokens are part of
the history auditors see, so each is an aggregate in the one log."""

import secrets
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from aggregates import Token
from aggregates.token import hash_secret
from aggregates.values import InvalidValue, label, network
from commands.operations import OPERATION_SCOPES
from commands.sealing import SigningKeys

TOKEN_PREFIX = "pmo"  # noqa: S105 - a public prefix, not a secret
AUDIT_SCOPE = "audit:read"  # the auditors' console, and nothing else
SCOPES = (*OPERATION_SCOPES, AUDIT_SCOPE)
DEFAULT_SCOPES = OPERATION_SCOPES
ENGINEERING = "engineering (CLI)"


class TokenError(Exception):
    pass


def format_token(token_id: UUID, secret: str) -> str:
    return f"{TOKEN_PREFIX}_{token_id.hex}_{secret}"


def parse_token(presented: str) -> tuple[UUID, str] | None:
    prefix, _, rest = presented.partition("_")
    id_hex, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or len(id_hex) != 32 or not secret:
        return None
    try:
        return UUID(hex=id_hex), secret
    except ValueError:
        return None


def admin_meta(actor: str) -> dict[str, Any]:
    return {
        "actor": actor,
        "token": None,
        "idempotency_key": None,
        "workflow": None,
        "source_address": None,
        "request_id": None,
    }


def find_token(app: Application[UUID], token_id: UUID) -> Token | None:
    try:
        token = app.repository.get(token_id)
    except AggregateNotFoundError:
        return None
    return token if isinstance(token, Token) else None


def _checked(what: str, rule: Callable[[str], str], value: str) -> str:
    try:
        return rule(value)
    except InvalidValue as reason:
        raise TokenError(f"The token's {what} {reason}.") from None


class TokenCommands(Application[UUID]):
    """Mixed into OpsApplication: the token commands engineering runs."""

    signing_keys: SigningKeys

    def issue_token(
        self,
        name: str,
        actor: str,
        scopes: list[str],
        allow_cidrs: list[str],
        rate_limit: int | None,
        cio_signing_key: str | None,
        issued_by: str = ENGINEERING,
    ) -> str:
        name, actor = _checked("name", label, name), _checked("actor", label, actor)
        cidrs = [_checked("allow-list entry", network, cidr) for cidr in allow_cidrs]
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise TokenError(f"Scopes must be some of {', '.join(SCOPES)}.")
        if cio_signing_key is not None:
            cio_signing_key = _checked("Customer.io signing key", label, cio_signing_key)
        if find_token(self, Token.create_id(name)) is not None:
            raise TokenError(
                f"A token named {name!r} already exists. Rotate it, or choose another name."
            )
        secret = secrets.token_urlsafe(32)
        token = Token(
            name=name,
            actor=actor,
            scopes=list(scopes),
            allow_cidrs=cidrs,
            rate_limit=rate_limit,
            cio_signing_key=None,
            sealed_signing_key=self.signing_keys.seal(cio_signing_key) if cio_signing_key else None,
            secret_hash=hash_secret(secret),
            meta=admin_meta(issued_by),
        )
        self.save(token)
        return format_token(token.id, secret)

    def revoke_token(self, name: str, by: str = ENGINEERING) -> None:
        token = self._existing_token(name)
        if token.revoked:
            raise TokenError(f"The token {name!r} is already revoked.")
        token.revoke(meta=admin_meta(by))
        self.save(token)

    def rotate_token(self, name: str, by: str = ENGINEERING) -> str:
        token = self._existing_token(name)
        if token.revoked:
            raise TokenError(f"The token {name!r} is revoked; issue a new one instead.")
        secret = secrets.token_urlsafe(32)
        token.rotate(secret_hash=hash_secret(secret), meta=admin_meta(by))
        self.save(token)
        return format_token(token.id, secret)

    def list_tokens(self) -> list[Token]:
        tokens: list[Token] = []
        topic = f"{Token.__module__}:{Token.__qualname__}.Issued"
        start = 1
        while True:
            notes = self.recorder.select_notifications(start, 500, topics=[topic])
            for note in notes:
                token = find_token(self, note.originator_id)
                if token is not None:
                    tokens.append(token)
            if len(notes) < 500:
                return sorted(tokens, key=lambda t: t.name)
            start = notes[-1].id + 1

    def _existing_token(self, name: str) -> Token:
        token = find_token(self, Token.create_id(name.strip()))
        if token is None:
            raise TokenError(f"There is no token named {name.strip()!r}.")
        return token
