"""Who may look: an `audit:read` token, pasted once, becomes a session.

The session row names the token by id and version; on every request the token's
current state is re-read (cached per process for the same 2 s as the API's
authentication), so a revoked or rotated token ends its sessions within 5 s on
every worker. The token value itself is checked once, at sign-in, and kept nowhere.
"""

import threading
import time
from dataclasses import dataclass
from uuid import UUID

import falcon
from eventsourcing.application import AggregateNotFoundError

from aggregates import Token
from aggregates.token import AUDIT_SCOPE
from api.console.store import ConsoleStore, Session
from api.gate import address_in
from commands.application import TOKEN_CACHE_SECONDS, OpsApplication

SESSION_COOKIE = "pmops_console"
SIGN_IN_COOKIE = "pmops_console_sign_in"  # double-submit CSRF value for the sign-in form
COOKIE_PATH = "/console"


class Refused(Exception):
    """A sign-in the console will not accept; the message is for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Viewer:
    """The signed-in auditor, as the pages see them."""

    session_id: str
    token_name: str
    csrf: str


class TokenStates:
    """A token's current state by id, re-read at most every TOKEN_CACHE_SECONDS."""

    def __init__(self, app: OpsApplication) -> None:
        self._app = app
        self._cache: dict[UUID, tuple[float, Token | None]] = {}
        self._lock = threading.Lock()

    def get(self, token_id: UUID) -> Token | None:
        now = time.monotonic()
        cached = self._cache.get(token_id)
        if cached is not None and now - cached[0] <= TOKEN_CACHE_SECONDS:
            return cached[1]
        try:
            found = self._app.repository.get(token_id)
        except AggregateNotFoundError:
            found = None
        token = found if isinstance(found, Token) else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token_id] = (now, token)
        return token


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
    def __init__(self, app: OpsApplication, store: ConsoleStore) -> None:
        self._app = app
        self._store = store
        self._tokens = TokenStates(app)

    def sign_in(self, presented: str, client_address: str | None) -> tuple[str, Token]:
        """Check a pasted token once; returns a new session id and the token."""
        token = self._app.authenticate(presented.strip())
        if token is None:
            raise Refused(
                401,
                "That token is not valid: it is unknown, revoked or has been rotated. "
                "Ask engineering for an audit token.",
            )
        if AUDIT_SCOPE not in token.scopes:
            raise Refused(
                403,
                "That token is for the operations and cannot open the console. Ask engineering "
                "for an audit token (pm-ops tokens issue --scope audit:read).",
            )
        if may_look(token, client_address) is not None:
            raise Refused(403, "That token may not be used from this address.")
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
        token = self._tokens.get(session.token_id)
        if may_look(token, client_address) is not None:
            return False
        assert token is not None
        return token.version == session.token_version  # rotated since: sign in again

    def sign_out(self, session_id: str) -> None:
        self._store.close_session(session_id)
