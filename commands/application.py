"""The event-sourced application: one log for every aggregate, and the
commands engineering runs directly (tokens, directory import)."""

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from aggregates import Community, EmailIndex, Person, Token, normalise_email
from aggregates.token import hash_secret
from commands.unit_of_work import UnitOfWork

TOKEN_PREFIX = "pmo"  # noqa: S105 - a public prefix, not a secret
TOKEN_CACHE_SECONDS = 2.0  # revocation reaches every worker well within 5 s


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class PersonRow:
    line: int
    person_id: int
    email: str


@dataclass(frozen=True)
class CommunityRow:
    line: int
    community_id: int
    name: str


@dataclass
class ImportReport:
    created: int = 0
    changed: int = 0
    unchanged: int = 0


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


class OpsApplication(Application[UUID]):
    name = "PmOps"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._tokens: dict[UUID, tuple[float, Token | None]] = {}
        self._tokens_lock = threading.Lock()

    # --- tokens -----------------------------------------------------------

    def issue_token(
        self,
        name: str,
        actor: str,
        scopes: list[str],
        allow_cidrs: list[str],
        rate_limit: int | None,
        cio_signing_key: str | None,
        issued_by: str = "engineering (CLI)",
    ) -> str:
        if self._find_token(Token.create_id(name)) is not None:
            raise TokenError(
                f"A token named {name!r} already exists. Rotate it, or choose another name."
            )
        secret = secrets.token_urlsafe(32)
        token = Token(
            name=name,
            actor=actor,
            scopes=scopes,
            allow_cidrs=allow_cidrs,
            rate_limit=rate_limit,
            cio_signing_key=cio_signing_key,
            secret_hash=hash_secret(secret),
            meta=admin_meta(issued_by),
        )
        self.save(token)
        return format_token(token.id, secret)

    def revoke_token(self, name: str, by: str = "engineering (CLI)") -> None:
        token = self._existing_token(name)
        if token.revoked:
            raise TokenError(f"The token {name!r} is already revoked.")
        token.revoke(meta=admin_meta(by))
        self.save(token)

    def rotate_token(self, name: str, by: str = "engineering (CLI)") -> str:
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
                token = self._find_token(note.originator_id)
                if token is not None:
                    tokens.append(token)
            if len(notes) < 500:
                return sorted(tokens, key=lambda t: t.name)
            start = notes[-1].id + 1

    def authenticate(self, presented: str) -> Token | None:
        """The live token for a presented bearer value, or None. Token state is
        cached per process for TOKEN_CACHE_SECONDS so a hot path does not read
        the log on every call, yet revocation and rotation apply within 5 s."""
        parsed = parse_token(presented)
        if parsed is None:
            return None
        token_id, secret = parsed
        now = time.monotonic()
        cached = self._tokens.get(token_id)
        if cached is None or now - cached[0] > TOKEN_CACHE_SECONDS:
            token = self._refresh_token(token_id, now)
        else:
            token = cached[1]
            if token is not None and not token.accepts(secret):
                # Perhaps just rotated: a new value must work at once, not in 2 s. (A wrong
                # secret costs one read, as an unknown token id does.)
                token = self._refresh_token(token_id, now)
        if token is None or not token.accepts(secret):
            return None
        return token

    def _refresh_token(self, token_id: UUID, now: float) -> Token | None:
        token = self._find_token(token_id)
        with self._tokens_lock:
            if len(self._tokens) > 10_000:  # unknown ids must not grow memory
                self._tokens.clear()
            self._tokens[token_id] = (now, token)
        return token

    def _find_token(self, token_id: UUID) -> Token | None:
        try:
            token = self.repository.get(token_id)
        except AggregateNotFoundError:
            return None
        return token if isinstance(token, Token) else None

    def _existing_token(self, name: str) -> Token:
        token = self._find_token(Token.create_id(name))
        if token is None:
            raise TokenError(f"There is no token named {name!r}.")
        return token

    # --- directory -----------------------------------------------------------

    def import_people(
        self,
        rows: Iterable[PersonRow],
        batch_size: int = 500,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Create people, or record an EmailChanged; a batch is one transaction.
        Rows must already be validated (the CLI refuses a bad file whole)."""
        report = ImportReport()
        meta = admin_meta("directory import")
        for batch in _batched(rows, batch_size):
            uow = UnitOfWork(self.repository)
            for row in batch:
                person = uow.get(Person, Person.create_id(row.person_id))
                if person is None:
                    uow.add(Person(person_id=row.person_id, email=row.email, meta=meta))
                    self._index_email(uow, row.email).add(row.person_id)
                    report.created += 1
                    continue
                old_email = person.email
                if old_email is not None and normalise_email(old_email) == normalise_email(
                    row.email
                ):
                    report.unchanged += 1
                    continue
                person.set_email(row.email, meta=meta)
                if old_email is not None:
                    self._index_email(uow, old_email).discard(row.person_id)
                self._index_email(uow, row.email).add(row.person_id)
                report.changed += 1
            self.save(*uow.aggregates())
            if on_batch:
                on_batch(len(batch))
        return report

    def import_communities(
        self,
        rows: Iterable[CommunityRow],
        batch_size: int = 500,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        report = ImportReport()
        meta = admin_meta("directory import")
        for batch in _batched(rows, batch_size):
            uow = UnitOfWork(self.repository)
            for row in batch:
                community = uow.get(Community, Community.create_id(row.community_id))
                if community is None:
                    uow.add(Community(community_id=row.community_id, name=row.name, meta=meta))
                    report.created += 1
                elif community.name != row.name:
                    community.rename(row.name, meta=meta)
                    report.changed += 1
                else:
                    report.unchanged += 1
            self.save(*uow.aggregates())
            if on_batch:
                on_batch(len(batch))
        return report

    @staticmethod
    def _index_email(uow: UnitOfWork, email: str) -> EmailIndex:
        index = uow.get(EmailIndex, EmailIndex.create_id(email))
        if index is None:
            index = EmailIndex(email=email)
            uow.add(index)
        return index


def _batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch
