"""Who may look: an `audit:read` token, pasted once, becomes a session.

The session row names the token by id and version; on every request the token's
current state is re-read (cached per process for the same 2 s as the API's
authentication), so a revoked or rotated token ends its sessions within 5 s on
every worker. The token value itself is checked once, at sign-in, and kept nowhere.
"""

from dataclasses import dataclass

import falcon

from aggregates import Token
from api.console.store import ConsoleStore, Session
from api.gate import address_in
from commands.authentication import Authenticator
from commands.documents import Problem
from commands.tokens import AUDIT_SCOPE

SESSION_COOKIE = "pmops_console"
SIGN_IN_COOKIE = "pmops_console_sign_in"  # double-submit CSRF value for the sign-in form
COOKIE_PATH = "/console"


@dataclass(frozen=True)
class Viewer:
    """The signed-in auditor, as the pages see them."""

    session_id: str
    token_name: str
    csrf: str


def is_https(req: falcon.Request, trusted_proxies: tuple[str, ...]) -> bool:
    """Served over https: the request's own scheme, or what a trusted proxy says it was."""
    if req.scheme == "https":
        return True
    if trusted_proxies and address_in(req.remote_addr, trusted_proxies):
        forwarded = (req.get_header("X-Forwarded-Proto") or "").split(",")[0]
        return forwarded.strip().lower() == "https"
    return False


def may_look(token: Token | None, client_address: str | None) -> str | None:
    """Why this token may not open the console now, or None if it may."""
    if token is None or token.revoked:
        return "the token is unknown or revoked"
    if AUDIT_SCOPE not in token.scopes:
        return "the token lacks the audit:read permission"
    if token.allow_cidrs and not address_in(client_address, tuple(token.allow_cidrs)):
        return "the token may not be used from this address"
    return None


class Auth:
    def __init__(self, authenticator: Authenticator, store: ConsoleStore) -> None:
        self._authenticator = authenticator  # the API's own token cache (2 s)
        self._store = store

    def sign_in(self, presented: str, client_address: str | None) -> tuple[str, Token]:
        """Check a pasted token once; returns a new session id and the token."""
        token = self._authenticator.authenticate(presented.strip())
        if token is None:
            raise Problem(
                401,
                "token_invalid",
                "Invalid token",
                "That token is not valid: it is unknown, revoked or has been rotated. "
                "Ask engineering for an audit token.",
            )
        if AUDIT_SCOPE not in token.scopes:
            raise Problem(
                403,
                "forbidden",
                "Not permitted",
                "That token is for the operations and cannot open the console. Ask engineering "
                "for an audit token (pm-ops tokens issue --scope audit:read).",
            )
        if may_look(token, client_address) is not None:
            raise Problem(
                403, "blocked", "Request blocked", "That token may not be used from this address."
            )
        return self._store.open_session(token.id, token.name, token.version), token

    def viewer(self, session_id: str, client_address: str | None) -> Viewer | None:
        """The signed-in auditor for a session id, or None (and the session is ended)."""
        session = self._store.session(session_id)
        if session is None:
            return None
        if not self._still_valid(session, client_address):
            self._store.close_session(session_id)
            return None
        return Viewer(session_id, session.token_name, session.csrf)

    def _still_valid(self, session: Session, client_address: str | None) -> bool:
        token = self._authenticator.current(session.token_id)
        if may_look(token, client_address) is not None:
            return False
        assert token is not None
        return token.version == session.token_version  # rotated since: sign in again

    def sign_out(self, session_id: str) -> None:
        self._store.close_session(session_id)
