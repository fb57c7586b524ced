"""Admission: everything a call must pass before it becomes a command, as one step.

`Gate.admit` returns one `Admission` (the token, who and why, the body and its
fingerprint) or raises one `Problem`. Checks, in order: the bearer token (401),
source allow-list (403), rate limit (429), scope (403), body size (413),
Customer.io signature (403), media type (415), idempotency key and workflow
headers (422). A refusal after authentication carries the call's context so it
can be recorded (SPEC §2); a 401 carries none."""

import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TypeVar

import falcon

from aggregates import Token
from aggregates.values import MAX_LABEL_LENGTH, has_control
from api.rate_limit import RateLimiter
from commands.authentication import Authenticator
from commands.documents import Problem, shown
from commands.handlers import generated_key
from commands.messages import CallContext
from commands.operations import Operation
from commands.sealing import SealingError

MAX_BODY_BYTES = 16 * 1024
MAX_KEY_LENGTH = 255
KEY_HEADERS = ("X-CIO-Idempotency-Key", "Idempotency-Key", "X-CIO-Delivery-Id")
MEDIA_TYPES = ("application/json", "application/vnd.api+json")
SIGNATURE_MAX_AGE = 300  # seconds either side of our clock

log = logging.getLogger("pm_ops.gate")
T = TypeVar("T")


@dataclass(frozen=True)
class Admission:
    token: Token
    context: CallContext  # complete: a call without a key carries a generated one
    body: bytes
    fingerprint: str


@dataclass(frozen=True)
class IdempotencyKey:
    value: str
    header: str


class Gate:
    def __init__(
        self, authenticator: Authenticator, rate_limiter: RateLimiter, default_rate_limit: int
    ) -> None:
        self._authenticator = authenticator
        self._rate_limiter = rate_limiter
        self._default_rate_limit = default_rate_limit

    def admit(self, req: falcon.Request, operation: Operation) -> Admission:
        try:
            token = self.authenticate(req)
        except Problem as problem:
            raise problem.of_call(operation.name) from None
        # The key and workflow headers are read once. Until every check passes, the context
        # names whichever of them is valid, so a refusal still shows which workflow
        # misbehaves; an invalid one is refused in its turn, after the media type.
        key, bad_key = _header_value(idempotency_key, req)
        workflow, bad_workflow = _header_value(workflow_header, req)
        context = CallContext(
            token.id,
            token.name,
            token.actor,
            req.context.request_id,
            idempotency_key=key.value if key else None,
            workflow=workflow,
            source_address=req.context.client_address,
            key_header=key.header if key else None,
        )
        try:
            self._check_caller(req, token, operation)
            body = read_body(req)
            if token.requires_signature:
                check_signature(req, body, self._signing_key(token))
            check_media_type(req)
            for problem in (bad_key, bad_workflow):
                if problem is not None:
                    raise problem
        except Problem as problem:
            raise problem.of_call(operation.name, context) from None
        if key is None:
            # A call without a key is recorded under a generated one (SPEC §2), which its
            # events carry too, so an audit entry always leads to its delivery record.
            context = replace(context, idempotency_key=generated_key())
        return Admission(token, context, body, fingerprint(operation, body))

    def authenticate(self, req: falcon.Request) -> Token:
        header = req.get_header("Authorization")
        if not header:
            raise unauthorized(
                'The Authorization header is missing. Send "Authorization: Bearer <token>".'
            )
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise unauthorized('The Authorization header must be "Bearer <token>".')
        token = self._authenticator.authenticate(presented.strip())
        if token is None:
            raise unauthorized(
                "The token is invalid, revoked or has been rotated. Tell engineering."
            )
        return token

    def _signing_key(self, token: Token) -> str:
        try:
            key = self._authenticator.signing_key(token)
        except SealingError as error:
            log.error("token %s: cannot check its signature: %s", token.name, error)
            key = None
        if key is None:
            raise blocked(
                "The server cannot check this token's Customer.io signature right now. "
                "Tell engineering.",
                header="X-CIO-Signature",
            )
        return key

    def _check_caller(self, req: falcon.Request, token: Token, operation: Operation) -> None:
        """Source allow-list, then rate limit, then scope: a blocked source does not
        use up the token's budget."""
        if token.allow_cidrs and not address_in(
            req.context.client_address, tuple(token.allow_cidrs)
        ):
            raise blocked(
                "This request came from an address this token is not allowed to be used from. "
                "Tell engineering."
            )
        retry_after = self._rate_limiter.hit(token.id, token.rate_limit or self._default_rate_limit)
        if retry_after is not None:
            raise Problem(
                429,
                "rate_limited",
                "Too many requests",
                f"This token has made too many requests in the last minute. Retry after {retry_after} seconds.",
                headers=(("Retry-After", str(retry_after)),),
            )
        if operation.scope not in token.scopes:
            raise Problem(
                403,
                "forbidden",
                "Not permitted",
                f"This token may not {operation.permission} (it lacks the "
                f"{operation.scope} permission). Tell engineering.",
                header="Authorization",
            )


def _header_value(
    read: Callable[[falcon.Request], T], req: falcon.Request
) -> tuple[T | None, Problem | None]:
    """A header's value, or the refusal it earns (raised later, in its turn)."""
    try:
        return read(req), None
    except Problem as problem:
        return None, problem


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "token_invalid",
        "Invalid token",
        detail,
        header="Authorization",
        headers=(("WWW-Authenticate", 'Bearer realm="pm-ops"'),),
    )


def blocked(detail: str, header: str | None = None) -> Problem:
    return Problem(403, "blocked", "Request blocked", detail, header=header)


def read_body(req: falcon.Request) -> bytes:
    too_large = Problem(
        413,
        "body_too_large",
        "Body too large",
        f"The body is larger than {MAX_BODY_BYTES // 1024} KiB. Send one person, one operation per call.",
    )
    if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
        raise too_large
    # Without Content-Length (chunked), bounded_stream reads nothing; the server's own
    # stream decodes the chunks and stops at their end.
    stream = req.bounded_stream if req.content_length is not None else req.stream
    body = stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise too_large
    return body


def check_media_type(req: falcon.Request) -> None:
    media, *parameters = (req.content_type or "").lower().split(";")
    charsets = [
        p.split("=", 1)[1].strip(' "') for p in parameters if p.strip().startswith("charset=")
    ]
    if media.strip() not in MEDIA_TYPES or any(c not in ("utf-8", "utf8") for c in charsets):
        given = f'"{shown(req.content_type)}"' if req.content_type else "missing"
        raise Problem(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            f"Content-Type is {given}; it must be application/json (JSON is UTF-8).",
            header="Content-Type",
        )


def idempotency_key(req: falcon.Request) -> IdempotencyKey | None:
    """The first non-empty of the accepted headers; an empty one counts as absent."""
    for name in KEY_HEADERS:
        value = (req.get_header(name) or "").strip()
        if name == "Idempotency-Key" and len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]  # IETF draft: an sf-string
        if not value:
            continue
        # ASCII and printable: exactly " " to "~" (str methods, not a loop per character).
        if len(value) > MAX_KEY_LENGTH or not (value.isascii() and value.isprintable()):
            raise Problem(
                422,
                "invalid_field",
                "Invalid idempotency key",
                f"The {name} header must be at most {MAX_KEY_LENGTH} printable ASCII characters.",
                header=name,
            )
        return IdempotencyKey(value, name)
    return None


def workflow_header(req: falcon.Request) -> str | None:
    value = _utf8(req.get_header("X-Ops-Workflow") or "").strip()
    if len(value) > MAX_LABEL_LENGTH or has_control(value):
        raise Problem(
            422,
            "invalid_field",
            "Invalid workflow",
            f"X-Ops-Workflow must be at most {MAX_LABEL_LENGTH} characters, without "
            "control characters.",
            header="X-Ops-Workflow",
        )
    return value or None


def _utf8(header: str) -> str:
    """WSGI hands headers over as latin-1; clients send workflow names as UTF-8."""
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return header


def fingerprint(operation: Operation, body: bytes) -> str:
    return hashlib.sha256(operation.path.encode() + b"\n" + body).hexdigest()


def check_signature(
    req: falcon.Request, body: bytes, signing_key: str, now: float | None = None
) -> None:
    """Customer.io's X-CIO-Signature: hex HMAC-SHA256 of v0:<timestamp>:<body>, with a
    timestamp close to our clock, so a captured request cannot be replayed later."""
    timestamp = (req.get_header("X-CIO-Timestamp") or "").strip()
    signature = (req.get_header("X-CIO-Signature") or "").strip().lower()
    if not timestamp or not signature:
        raise blocked(
            "This token requires Customer.io's webhook signature (X-CIO-Signature and "
            "X-CIO-Timestamp headers). Tell engineering.",
            header="X-CIO-Signature",
        )
    expected = hmac.new(
        signing_key.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise blocked(
            "The Customer.io signature check failed. Tell engineering.", header="X-CIO-Signature"
        )
    try:
        skew = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        skew = float("inf")
    if not skew <= SIGNATURE_MAX_AGE:
        raise blocked(
            f"X-CIO-Timestamp is more than {SIGNATURE_MAX_AGE // 60} minutes from the server's "
            "clock: a signed request is accepted only when it is fresh. Tell engineering if "
            "Customer.io's clock or a long delay is the cause.",
            header="X-CIO-Timestamp",
        )


@lru_cache(maxsize=256)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def client_address(req: falcon.Request, trusted_proxies: tuple[str, ...]) -> str | None:
    """The caller's address. Behind a trusted proxy (a load balancer) it is the
    right-most X-Forwarded-For entry that is not itself a trusted proxy; a header from
    anyone else is ignored, so a client cannot choose the address it is judged by."""
    peer = req.remote_addr
    if not trusted_proxies or not address_in(peer, trusted_proxies):
        return peer
    forwarded = [a.strip() for a in (req.get_header("X-Forwarded-For") or "").split(",")]
    for address in reversed([a for a in forwarded if a]):
        if not is_address(address):
            return peer  # a forged or garbled entry: judge the proxy, record nothing made up
        if not address_in(address, trusted_proxies):
            return address
    return peer


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def address_in(address: str | None, cidrs: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in _networks(cidrs) if net.version == ip.version)
