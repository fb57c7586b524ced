"""Shared fixtures. Every store-touching test runs on SQLite and on PostgreSQL;
each PostgreSQL test gets a schema of its own so tests never see each other's log."""

import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from falcon import testing

from api.app import create_app
from api.bootstrap import Services, build_services
from api.config import Config
from commands.application import CommunityRow, PersonRow

POSTGRES_URL = os.environ.get("OPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# PostgreSQL deployments must set OPS_SECRET_KEY (it seals Customer.io signing keys);
# the tests' servers and CLI runs inherit this one.
os.environ.setdefault("OPS_SECRET_KEY", "dGVzdC1vbmx5LXNlY3JldC1rZXktZm9yLXBtLW9wcyE=")


def new_id() -> int:
    return random.randint(10**6, 10**12)


def postgres_or_skip() -> None:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as error:
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable ({error.__class__.__name__})"
        if IN_CI:
            pytest.fail(f"{message}; in CI the PostgreSQL tests must run.")
        pytest.skip(f"{message}; set OPS_TEST_POSTGRES_URL to run the PostgreSQL tests.")


@pytest.fixture(params=["sqlite", "postgres"])
def config(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Config]:
    if request.param == "sqlite":
        yield Config(database_url=f"sqlite:///{tmp_path}/ops.db")
        return
    postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield Config(
            database_url=f"{POSTGRES_URL}?schema={schema}", secret_key=os.environ["OPS_SECRET_KEY"]
        )
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def checkpoint_key(tmp_path: Any) -> str:
    """An Ed25519 signing key in PEM, as `openssl genpkey -algorithm ed25519` writes it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    path = tmp_path / f"checkpoint-{uuid.uuid4().hex[:6]}.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    path.write_bytes(pem)
    return str(path)


@pytest.fixture
def services(config: Config) -> Iterator[Services]:
    built = build_services(config)
    yield built
    built.close()


@pytest.fixture
def client(services: Services) -> testing.TestClient:
    return testing.TestClient(create_app(services))


@dataclass
class Directory:
    """A freshly imported directory with random ids, and a token to call with."""

    services: Services
    person_id: int
    email: str
    other_person_id: int
    shared_email: str
    community_id: int
    token: str

    def headers(
        self, key: str | None = None, token: str | None = None, **extra: str
    ) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token or self.token}",
        }
        if key is not None:
            headers["X-CIO-Idempotency-Key"] = key
        headers.update(extra)
        return headers

    def issue(self, scopes: tuple[str, ...] = ("community:add", "code:set"), **options: Any) -> str:
        return self.services.app.issue_token(
            name=f"token-{uuid.uuid4().hex[:8]}",
            actor=options.pop("actor", "Customer.io"),
            scopes=list(scopes),
            allow_cidrs=options.pop("allow_cidrs", []),
            rate_limit=options.pop("rate_limit", None),
            cio_signing_key=options.pop("cio_signing_key", None),
        )


@pytest.fixture
def directory(services: Services) -> Directory:
    person, other, third = new_id(), new_id(), new_id()
    community = new_id()
    tag = uuid.uuid4().hex[:8]
    email = f"jane.{tag}@example.com"
    shared = f"shared.{tag}@example.com"
    services.app.import_people(
        [
            PersonRow(2, person, email),
            PersonRow(3, other, shared),
            PersonRow(4, third, shared.upper()),
        ]
    )
    services.app.import_communities([CommunityRow(2, community, "Founders Circle")])
    directory = Directory(services, person, email, other, shared, community, "")
    directory.token = directory.issue()
    return directory


def add_member_body(person: Any = None, community: Any = None, **attributes: Any) -> dict[str, Any]:
    attrs = dict(attributes)
    if person is not None:
        attrs["personId"] = person
    if community is not None:
        attrs["communityId"] = community
    return {"data": {"type": "communityMembership", "attributes": attrs}}


def set_code_body(person: Any = None, **attributes: Any) -> dict[str, Any]:
    attrs = dict(attributes)
    if person is not None:
        attrs["personId"] = person
    return {"data": {"type": "personSignupCode", "attributes": attrs}}


@pytest.fixture
def server(services: Services) -> Iterator[str]:
    """The app on a loopback port in this process (real HTTP); its base URL."""
    from tests.helpers import serving  # helpers import this module

    with serving(services) as url:
        yield url


@pytest.fixture
def make_proxy(server: str) -> Iterator[Any]:
    """Makes fault-injecting HTTP proxies in front of `server` (tests.helpers.FaultProxy)."""
    from tests.helpers import FaultProxy

    proxies: list[FaultProxy] = []

    def make(plan: list[str] | None = None) -> FaultProxy:
        proxies.append(FaultProxy(server, plan))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster of the module's own, to stop and restart."""
    from tests.pg_cluster import Cluster  # it reads this module's IN_CI

    made = Cluster()
    try:
        yield made
    finally:
        made.destroy()
