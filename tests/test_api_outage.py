"""A store that goes away under a running app (SPEC §1): 503 with Retry-After, never a
stack trace. On both stores."""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from falcon import testing

from api.app import create_app
from api.bootstrap import build_services
from api.config import Config
from commands.application import CommunityRow
from tests.conftest import add_member_body, set_code_body
from tests.helpers import (
    ADD,
    CODE,
    Cable,
    add_person,
    error_of,
    issue,
    key,
    post,
)


def test_an_unreachable_store_is_503_not_a_stack_trace(config, tmp_path):
    """The store goes away under a running app: PostgreSQL behind a cable that is
    pulled, SQLite whose file is overwritten. (Without a store the app cannot be
    built at all: build_services raises, so serve fails to start, which is honest.)"""
    proxy = None
    if config.is_postgres:
        parts = urlsplit(config.database_url)
        proxy = Cable(parts.hostname or "127.0.0.1", parts.port or 5432)
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
        config = Config(database_url=urlunsplit(parts._replace(netloc=netloc)))
    services = build_services(config)
    try:
        person, _ = add_person(services)
        services.app.import_communities([CommunityRow(2, 42, "Founders Circle")])
        token = issue(services, "outage")
        client = testing.TestClient(create_app(services))
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        assert post(client, ADD, add_member_body(person, 42), headers).status_code == 200

        if proxy is not None:
            proxy.cut()
        else:
            for file in Path(config.database_url.removeprefix("sqlite:///")).parent.iterdir():
                file.write_bytes(b"\xff" * max(file.stat().st_size, 4096))

        result = post(
            client,
            CODE,
            set_code_body(person, code="VC"),
            headers | {"X-CIO-Idempotency-Key": key()},
        )
        error = error_of(
            result, 503, "unavailable", "temporarily unreachable", "same idempotency key"
        )
        assert "source" not in error
        assert result.headers["Retry-After"].isdigit()
        if proxy is None:  # on PostgreSQL the library retries reads for ~50 s first
            ready = client.simulate_get("/readyz")
            assert ready.status_code == 503
            error_of(ready, 503, "unavailable")
        assert client.simulate_get("/healthz").status_code == 200
    finally:
        services.close()
