"""The real server (granian, several worker processes) under concurrent calls."""

import json
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.message import Message

import pytest

from tests.conftest import add_member_body, new_id, set_code_body
from tests.server import running_server

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"


def post(
    base: str, path: str, body: dict, token: str, key: str | None = None
) -> tuple[int, bytes, Message]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if key:
        headers["X-CIO-Idempotency-Key"] = key
    request = urllib.request.Request(base + path, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def topics(services) -> list[str]:
    return [n.topic for n in services.app.recorder.select_notifications(1, 100_000)]


def events_of(services, topic_suffix: str) -> list:
    return [
        services.app.mapper.to_domain_event(n)
        for n in services.app.recorder.select_notifications(1, 100_000)
        if n.topic.endswith(topic_suffix)
    ]


@pytest.fixture
def server(config, directory):
    with running_server(config.database_url, "--workers", "2", "--no-projections") as base:
        yield base


def test_32_concurrent_requests_with_one_key_execute_once(server, directory, services):
    body = add_member_body(directory.person_id, directory.community_id)
    key = f"dup-{uuid.uuid4()}"
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: post(server, ADD, body, directory.token, key), range(32)))
    assert {status for status, _, _ in results} == {200}
    assert len({raw for _, raw, _ in results}) == 1
    assert json.loads(results[0][1])["data"]["attributes"]["alreadyMember"] is False
    assert sum(1 for _, _, h in results if h.get("Idempotent-Replayed") == "true") == 31
    assert len(events_of(services, "Person.MemberAdded")) == 1
    assert len(events_of(services, "Delivery.Recorded")) == 1


def test_concurrent_keys_for_one_person_lose_no_update(server, directory, services):
    communities = [new_id() for _ in range(24)]
    from commands.application import CommunityRow

    services.app.import_communities([CommunityRow(0, c, f"c{c}") for c in communities])
    with ThreadPoolExecutor(24) as pool:
        results = list(
            pool.map(
                lambda c: post(
                    server,
                    ADD,
                    add_member_body(directory.person_id, c),
                    directory.token,
                    str(uuid.uuid4()),
                ),
                communities,
            )
        )
    assert [status for status, _, _ in results] == [200] * 24
    added = events_of(services, "Person.MemberAdded")
    assert sorted(e.community_id for e in added) == sorted(communities)
    person = services.app.repository.get(added[0].originator_id)
    assert person.communities == set(communities)


def test_concurrent_code_changes_form_one_unbroken_chain(server, directory, services):
    codes = [f"CODE-{i}" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(
            pool.map(
                lambda c: post(
                    server,
                    CODE,
                    set_code_body(directory.person_id, code=c),
                    directory.token,
                    str(uuid.uuid4()),
                ),
                codes,
            )
        )
    assert [status for status, _, _ in results] == [200] * 16
    changes = events_of(services, "Person.SignupCodeChanged")
    # Each change saw the one before it: no two calls read the same previous code.
    assert [c.previous_code for c in changes] == [None] + [c.new_code for c in changes[:-1]]
    assert sorted(c.new_code for c in changes) == sorted(codes)
    previous = {json.loads(raw)["data"]["attributes"]["previousCode"] for _, raw, _ in results}
    assert len(previous) == 16


def test_rate_limit_holds_across_worker_processes(server, directory, services):
    token = directory.issue(rate_limit=10)
    body = set_code_body(directory.person_id, code="RL")
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: post(server, CODE, body, token, str(uuid.uuid4())), range(30))
        )
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20
    limited = next(h for status, _, h in results if status == 429)
    assert 1 <= int(limited["Retry-After"]) <= 60
