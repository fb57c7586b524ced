"""A small typed client for the pm-ops operations (HTTP from the standard library;
paths and types from the operations' declaration in commands/operations.py).

    from api.client import OpsClient, OpsError

    client = OpsClient("https://app.letsplaymoney.com", token)
    result = client.add_member(person_id=123, community_id=42)
    print(result.describe())          # "Added person 123 to community 42."
    result = client.set_code(email="jane@example.com", code="VC-Partners")
    result = client.set_code(person_id=123, code=None)   # clears: say None explicitly

Every call sends an idempotency key (a fresh one, or the one you pass). 429 (after its
Retry-After), 502/503/504, timeouts and connection errors are retried with exponential
backoff and jitter, always with the same key, so a retry can never run an operation twice.
Anything else that is not a 200 raises `OpsError` carrying the server's status, code and
plain-English detail. The token is never part of any message, repr or exception.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.script.exit_codes import (
    EXIT_FIX_INPUT,
    EXIT_OK,
    EXIT_RATE_LIMITED,
    EXIT_SERVER,
    EXIT_TOKEN,
    WHO_FIXES,
    for_status,
)

# The exit codes of `pm-ops call`, one per "who handles it" row of the guide's status table,
# are decided in one place outside this client; re-exported here for Python callers.
from commands.operations import BY_NAME

__all__ = [
    "ADD_MEMBER_PATH",
    "EXIT_FIX_INPUT",
    "EXIT_OK",
    "EXIT_RATE_LIMITED",
    "EXIT_SERVER",
    "EXIT_TOKEN",
    "KEY_HEADER",
    "SET_CODE_PATH",
    "WHO_FIXES",
    "MembershipResult",
    "OpsClient",
    "OpsError",
    "Result",
    "RetryHook",
    "SignupCodeResult",
    "new_key",
]

# Paths and types come from the operations' one declaration (commands/operations.py).
ADD_MEMBER = BY_NAME["add-member"]
SET_CODE = BY_NAME["set-code"]
ADD_MEMBER_PATH = ADD_MEMBER.path
SET_CODE_PATH = SET_CODE.path
KEY_HEADER = "X-CIO-Idempotency-Key"
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class MembershipResult:
    """The outcome of add-member: `already_member` True means nothing changed."""

    person_id: int
    community_id: int
    already_member: bool
    idempotency_key: str
    replayed: bool = False  # the server replayed the stored outcome of an earlier call

    @property
    def changed(self) -> bool:
        return not self.already_member

    def describe(self) -> str:
        if self.already_member:
            text = (
                f"Person {self.person_id} is already a member of community "
                f"{self.community_id}. Nothing changed."
            )
        else:
            text = f"Added person {self.person_id} to community {self.community_id}."
        return text + (_REPLAYED if self.replayed else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "operation": "add-member",
            "outcome": "already_member" if self.already_member else "added",
            "personId": self.person_id,
            "communityId": self.community_id,
            "alreadyMember": self.already_member,
            "idempotencyKey": self.idempotency_key,
            "replayed": self.replayed,
        }


@dataclass(frozen=True)
class SignupCodeResult:
    """The outcome of set-code: `changed` False means the code already had that value.
    `code` None means no code (the platform default)."""

    person_id: int
    code: str | None
    previous_code: str | None
    changed: bool
    idempotency_key: str
    replayed: bool = False

    def describe(self) -> str:
        who = f"Person {self.person_id}'s signup code"
        if not self.changed:
            text = (
                f"{who} is already {self.code}. Nothing changed."
                if self.code is not None
                else f"{who} is already cleared (platform default). Nothing changed."
            )
        elif self.code is None:
            text = f"{who} was cleared (it was {self.previous_code}; now the platform default)."
        else:
            before = self.previous_code if self.previous_code is not None else "(none)"
            text = f"{who} changed from {before} to {self.code}."
        return text + (_REPLAYED if self.replayed else "")

    def as_dict(self) -> dict[str, Any]:
        outcome = "cleared" if self.code is None else "changed"
        if not self.changed:
            outcome = "unchanged"
        return {
            "ok": True,
            "operation": "set-code",
            "outcome": outcome,
            "personId": self.person_id,
            "code": self.code,
            "previousCode": self.previous_code,
            "changed": self.changed,
            "idempotencyKey": self.idempotency_key,
            "replayed": self.replayed,
        }


_REPLAYED = " (Replayed: this idempotency key was used before; the stored result is shown and nothing ran twice.)"


@dataclass(eq=False)
class OpsError(Exception):
    """A call that did not succeed. `status` is None when the server was never reached.

    `code` is the server's stable JSON:API error code (`person_not_found`,
    `email_ambiguous`, `invalid_field`, ...) or, for failures before any answer,
    `unreachable` / `timeout`. `detail` is the plain-English explanation.
    """

    status: int | None
    code: str
    detail: str
    idempotency_key: str
    title: str = ""
    source: dict[str, str] | None = None
    attempts: int = 1
    retry_after: int | None = None
    replayed: bool = False  # the stored answer of an earlier call with this key

    def __str__(self) -> str:
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.detail}"

    @property
    def exit_code(self) -> int:
        """The `pm-ops call` exit code this error ends a call with (see api.script.exit_codes)."""
        return for_status(self.status)

    @property
    def who_fixes(self) -> str:
        return WHO_FIXES[self.exit_code]

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": False,
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "source": self.source,
            "idempotencyKey": self.idempotency_key,
            "attempts": self.attempts,
            "replayed": self.replayed,
            "exitCode": self.exit_code,
            "whoFixes": self.who_fixes,
        }


RetryHook = Callable[[OpsError, int, float], None]  # (error, next attempt number, delay s)


class OpsClient:
    """Calls pm-ops. `retries` is how many times a transient failure is retried."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        timeout: float = 30.0,
        workflow: str | None = None,
        on_retry: RetryHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the URL must start with http:// or https://, not {base_url!r}")
        if not token or not token.strip():
            raise ValueError("a token is required (engineering hands these out)")
        self.base_url = base_url.rstrip("/")
        self._token = token.strip()
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.workflow = workflow
        self.on_retry = on_retry
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"OpsClient({self.base_url!r}, token=<hidden>)"

    # --- the two operations ------------------------------------------------------

    def add_member(
        self,
        *,
        community_id: int,
        person_id: int | None = None,
        email: str | None = None,
        key: str | None = None,
    ) -> MembershipResult:
        attributes = _person(person_id, email)
        attributes["communityId"] = _positive_int(community_id, "community_id")
        key = key or new_key()
        doc, replayed = self._post(ADD_MEMBER_PATH, ADD_MEMBER.resource_type, attributes, key)
        attrs = doc["data"]["attributes"]
        return MembershipResult(
            person_id=attrs["personId"],
            community_id=attrs["communityId"],
            already_member=bool(attrs["alreadyMember"]),
            idempotency_key=key,
            replayed=replayed,
        )

    def set_code(
        self,
        *,
        code: str | None,
        person_id: int | None = None,
        email: str | None = None,
        key: str | None = None,
    ) -> SignupCodeResult:
        """Set the signup code; `code=None` clears it (required: there is no default)."""
        if code is not None and not isinstance(code, str):
            raise TypeError("code must be a string, or None to clear it")
        attributes = _person(person_id, email)
        attributes["code"] = code
        key = key or new_key()
        doc, replayed = self._post(SET_CODE_PATH, SET_CODE.resource_type, attributes, key)
        attrs = doc["data"]["attributes"]
        return SignupCodeResult(
            person_id=attrs["personId"],
            code=attrs["code"],
            previous_code=attrs["previousCode"],
            changed=bool(attrs["changed"]),
            idempotency_key=key,
            replayed=replayed,
        )

    def call(
        self,
        operation: str,
        *,
        value: Any,
        person_id: int | None = None,
        email: str | None = None,
        key: str | None = None,
    ) -> Result:
        """Any declared operation by name, given its one attribute's value (as the script
        runner calls them); the answer is that operation's typed result."""
        argument = BY_NAME[operation].field.argument
        return TYPED[operation](
            self, key=key, person_id=person_id, email=email, **{argument: value}
        )

    # --- transport -----------------------------------------------------------------

    def _post(
        self, path: str, type_: str, attributes: dict[str, Any], key: str
    ) -> tuple[dict[str, Any], bool]:
        body = json.dumps({"data": {"type": type_, "attributes": attributes}}).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/vnd.api+json",
            "Authorization": f"Bearer {self._token}",
            KEY_HEADER: key,
            "User-Agent": "pm-ops-client/1",
        }
        if self.workflow:
            headers["X-Ops-Workflow"] = self.workflow
        attempt = 1
        while True:
            try:
                return self._once(self.base_url + path, body, headers, key, attempt)
            except OpsError as error:
                if not error.retryable or attempt > self.retries:
                    raise
                delay = self._delay(error, attempt)
                if self.on_retry is not None:
                    self.on_retry(error, attempt + 1, delay)
                self._sleep(delay)
                attempt += 1

    def _delay(self, error: OpsError, attempt: int) -> float:
        backoff = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        jittered = backoff / 2 + random.uniform(0, backoff / 2)
        if error.retry_after is not None:
            # Honour the server: never earlier than Retry-After, plus a little jitter
            # so that many clients do not all come back in the same instant.
            return min(self.max_retry_after, error.retry_after) + random.uniform(0, 0.25)
        return jittered

    def _once(
        self, url: str, body: bytes, headers: dict[str, str], key: str, attempt: int
    ) -> tuple[dict[str, Any], bool]:
        # The scheme is checked in __init__: only http:// and https:// get here.
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
                status = response.status
                replayed = (response.headers.get("Idempotent-Replayed") or "").lower() == "true"
        except urllib.error.HTTPError as error:
            try:
                raw = error.read()
            except OSError:
                raw = b""
            finally:
                error.close()
            raise self._error(error.code, raw, error.headers, key, attempt) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(error, TimeoutError) or isinstance(reason, TimeoutError):
                raise OpsError(
                    None,
                    "timeout",
                    f"No answer from {self.base_url} within {self.timeout:g} seconds.",
                    key,
                    attempts=attempt,
                ) from None
            raise OpsError(
                None,
                "unreachable",
                f"Could not reach {self.base_url} ({_describe(reason)}).",
                key,
                attempts=attempt,
            ) from None
        try:
            doc = json.loads(raw)
            if not isinstance(doc["data"]["attributes"], dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise OpsError(
                status,
                "unexpected_response",
                f"The server answered {status} with a body that is not a pm-ops result. "
                "Check that OPS_URL is the pm-ops base URL.",
                key,
                attempts=attempt,
            ) from None
        return doc, replayed

    def _error(self, status: int, raw: bytes, headers: Any, key: str, attempt: int) -> OpsError:
        retry_after = _retry_after(headers.get("Retry-After") if headers else None)
        replayed = bool(headers) and (headers.get("Idempotent-Replayed") or "").lower() == "true"
        try:
            error = json.loads(raw)["errors"][0]
            code = str(error.get("code") or f"http_{status}")
            title = str(error.get("title") or "")
            detail = str(error.get("detail") or title or f"HTTP {status}")
            source = error.get("source") if isinstance(error.get("source"), dict) else None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            code, title, source = f"http_{status}", "", None
            detail = (
                f"The server (or a proxy in front of it) answered HTTP {status}, not a pm-ops "
                "error. Check that OPS_URL is the pm-ops base URL."
            )
        return OpsError(
            status,
            code,
            self._redact(detail),
            key,
            title=self._redact(title),
            source=source,
            attempts=attempt,
            retry_after=retry_after,
            replayed=replayed,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text


Result = MembershipResult | SignupCodeResult
# Each declared operation's typed method (a test checks that every operation has one).
TYPED: dict[str, Callable[..., Result]] = {
    ADD_MEMBER.name: OpsClient.add_member,
    SET_CODE.name: OpsClient.set_code,
}


def new_key() -> str:
    return f"pm-ops-call-{uuid.uuid4()}"


def _person(person_id: int | None, email: str | None) -> dict[str, Any]:
    if (person_id is None) == (email is None):
        raise ValueError("give exactly one of person_id or email")
    if person_id is not None:
        return {"personId": _positive_int(person_id, "person_id")}
    return {"email": email}


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a whole number greater than 0, not {value!r}")
    return value


def _retry_after(value: str | None) -> int | None:
    try:
        return max(0, int((value or "").strip()))
    except ValueError:
        return None


def _describe(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: is the service running at this address?"
    if isinstance(reason, socket.gaierror):
        return "the host name does not resolve"
    text = str(reason) or type(reason).__name__
    return text
