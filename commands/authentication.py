"""Which live token a presented bearer value is, answered fast on the hot path.

Token state is cached per process for CACHE_SECONDS so a call does not read the
log every time, yet a revocation or rotation is refused on every worker within
5 s; a secret that does not match the cached hash is re-read at once, so a
rotated token's new value works immediately."""

import threading
import time
from uuid import UUID

from eventsourcing.application import Application

from aggregates import Token
from commands.sealing import SigningKeys
from commands.tokens import find_token, parse_token

CACHE_SECONDS = 2.0  # revocation reaches every worker well within 5 s
MAX_CACHED = 10_000  # unknown ids must not grow memory


class Authenticator:
    def __init__(self, app: Application[UUID], signing_keys: SigningKeys) -> None:
        self._app = app
        self._signing_keys = signing_keys
        self._opened: dict[str, str] = {}
        self._tokens: dict[UUID, tuple[float, Token | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, presented: str) -> Token | None:
        """The live token for a presented bearer value, or None."""
        parsed = parse_token(presented)
        if parsed is None:
            return None
        token_id, secret = parsed
        now = time.monotonic()
        cached = self._tokens.get(token_id)
        if cached is not None and now - cached[0] <= CACHE_SECONDS:
            token = cached[1]
            if token is None or token.accepts(secret):  # unknown, or the right secret
                return token
        # Not cached, stale, or a secret the cached token does not take: perhaps it was
        # just rotated, and a new value must work at once, not in 2 s. (A wrong secret
        # costs one read, as an unknown token id does.)
        token = self._refresh(token_id, now)
        if token is None or not token.accepts(secret):
            return None
        return token

    def current(self, token_id: UUID) -> Token | None:
        """The token's state, at most CACHE_SECONDS old (for sessions keyed by token id)."""
        cached = self._tokens.get(token_id)
        now = time.monotonic()
        if cached is None or now - cached[0] > CACHE_SECONDS:
            return self._refresh(token_id, now)
        return cached[1]

    def signing_key(self, token: Token) -> str | None:
        """The Customer.io signing key the token requires, if any (raises SealingError
        when it cannot be opened)."""
        if token.cio_signing_key:
            return token.cio_signing_key
        if not token.sealed_signing_key:
            return None
        opened = self._opened.get(token.sealed_signing_key)
        if opened is None:
            opened = self._signing_keys.open(token.sealed_signing_key)
            with self._lock:
                if len(self._opened) > MAX_CACHED:
                    self._opened.clear()
                self._opened[token.sealed_signing_key] = opened
        return opened

    def _refresh(self, token_id: UUID, now: float) -> Token | None:
        token = find_token(self._app, token_id)
        with self._lock:
            if len(self._tokens) > MAX_CACHED:
                self._tokens.clear()
            self._tokens[token_id] = (now, token)
        return token
