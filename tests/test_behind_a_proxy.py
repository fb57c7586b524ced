"""Behind a load balancer the caller's address comes from X-Forwarded-For, but only
when the balancer is trusted (OPS_TRUSTED_PROXIES); otherwise the header is ignored."""

from dataclasses import replace

import pytest
from falcon import testing

from api.app import create_app
from api.bootstrap import build_services
from api.config import Config, ConfigError
from tests.conftest import set_code_body

CODE = "/api/v1/ops/people/code"


def recorded_sources(services) -> list[str]:
    return [
        services.app.mapper.to_domain_event(n).meta["source_address"]
        for n in services.app.recorder.select_notifications(1, 10_000)
        if n.topic.endswith("SignupCodeChanged")
    ]


def test_a_trusted_balancer_passes_the_callers_address_on(config, directory, services):
    behind = build_services(
        replace(config, trusted_proxies=("127.0.0.0/8", "10.0.0.0/8")), create_tables=False
    )
    try:
        client = testing.TestClient(create_app(behind))
        allowed = directory.issue(allow_cidrs=["198.51.100.0/24"])
        headers = directory.headers(
            token=allowed, **{"X-Forwarded-For": "203.0.113.9, 198.51.100.7, 10.1.2.3"}
        )
        result = client.simulate_post(
            CODE,
            json=set_code_body(directory.person_id, code="P1"),
            headers=headers,
            remote_addr="127.0.0.1",
        )
        assert result.status_code == 200, result.text
        assert recorded_sources(services) == ["198.51.100.7"]
    finally:
        behind.close()


def test_without_a_trusted_balancer_the_header_is_ignored(client, directory, services):
    allowed = directory.issue(allow_cidrs=["198.51.100.0/24"])
    headers = directory.headers(token=allowed, **{"X-Forwarded-For": "198.51.100.7"})
    result = client.simulate_post(
        CODE,
        json=set_code_body(directory.person_id, code="P2"),
        headers=headers,
        remote_addr="127.0.0.1",
    )
    assert result.status_code == 403
    assert result.json["errors"][0]["code"] == "blocked"


def test_a_bad_trusted_proxies_setting_is_a_clear_error():
    with pytest.raises(ConfigError, match="OPS_TRUSTED_PROXIES"):
        Config.from_env({"OPS_TRUSTED_PROXIES": "10.0.0.0/8, not-a-network"})
    assert Config.from_env(
        {"OPS_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16"}
    ).trusted_proxies == (
        "10.0.0.0/8",
        "192.168.0.0/16",
    )
