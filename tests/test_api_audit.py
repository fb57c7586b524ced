"""What the log records of a call (SPEC §2): who and why on every event of a change and of a
refusal; nothing at all for a 401 or a 429. Through the app factory, on both stores."""

import uuid

from tests.conftest import add_member_body, set_code_body
from tests.helpers import (
    ADD,
    CODE,
    add_body,
    events,
    head,
    issue,
    key,
    notes,
    post,
)

META = {"actor", "token", "idempotency_key", "workflow", "source_address", "request_id"}


def test_every_event_of_a_call_carries_who_and_why(client, directory, services):
    name = f"ops-script-{uuid.uuid4().hex[:6]}"
    token = issue(services, name, actor="Marketing Ops")
    headers = directory.headers(
        "key-meta-1",
        token=token,
        **{"X-Ops-Workflow": "Welcome series", "X-Request-Id": "req-meta-1"},
    )
    post(client, ADD, add_body(directory), headers, remote_addr="198.51.100.7")
    body = set_code_body(directory.person_id, code="VC") | {"meta": {"workflow": "From body"}}
    result = post(client, CODE, body, directory.headers("key-meta-2", token=token))
    assert result.headers["X-Request-Id"]
    both = set_code_body(directory.person_id, code="VC2") | {"meta": {"workflow": "From body"}}
    post(
        client,
        CODE,
        both,
        directory.headers("key-meta-3", token=token, **{"X-Ops-Workflow": "Header wins"}),
    )

    added = events(services, "Person.MemberAdded")[0]
    assert set(added.meta) >= META
    assert added.meta == {
        "actor": "Marketing Ops",
        "token": name,
        "idempotency_key": "key-meta-1",
        "workflow": "Welcome series",
        "source_address": "198.51.100.7",
        "request_id": "req-meta-1",
    }
    first_code, second_code = events(services, "Person.SignupCodeChanged")
    assert first_code.meta["workflow"] == "From body"
    assert first_code.meta["request_id"] == result.headers["X-Request-Id"]
    assert first_code.meta["source_address"] == "127.0.0.1"
    assert second_code.meta["workflow"] == "Header wins"
    deliveries = events(services, "Delivery.Recorded")
    assert [d.meta["idempotency_key"] for d in deliveries] == [
        "key-meta-1",
        "key-meta-2",
        "key-meta-3",
    ]
    assert all(d.meta["actor"] == "Marketing Ops" and d.meta["token"] == name for d in deliveries)
    assert all(e.timestamp for e in [added, first_code, *deliveries])


def test_a_rejected_call_is_recorded_with_who_and_why(client, directory, services):
    name = f"cio-{uuid.uuid4().hex[:6]}"
    token = issue(services, name)
    headers = directory.headers(
        "key-rejected-1",
        token=token,
        **{"X-Ops-Workflow": "Broken workflow", "X-Request-Id": "req-rejected-1"},
    )
    before = head(services)
    post(
        client,
        ADD,
        b'{"data": {"type": "communityMembership", "attributes": {"personId": }}}',
        headers,
    )
    post(client, ADD, add_body(directory), headers | {"Content-Type": "text/plain"})
    quoted = add_member_body(directory.person_id, "42") | {"meta": {"workflow": "Body workflow"}}
    post(client, ADD, quoted, directory.headers(token=token))
    new = [n for n in notes(services) if n.id > before]
    assert [n.topic for n in new] == ["aggregates.delivery:RejectedCall.Recorded"] * 3
    malformed, media, invalid = (services.app.mapper.to_domain_event(n) for n in new)
    assert (malformed.status, malformed.code) == (422, "invalid_field")
    assert "personId is empty" in malformed.detail
    for event in (malformed, media):
        assert event.meta == {
            "actor": "Customer.io",
            "token": name,
            "idempotency_key": "key-rejected-1",
            "workflow": "Broken workflow",
            "source_address": "127.0.0.1",
            "request_id": "req-rejected-1",
        }
    assert (media.status, media.code) == (415, "unsupported_media_type")
    assert invalid.meta["workflow"] == "Body workflow"
    assert invalid.meta["token"] == name


def test_a_401_and_a_429_write_nothing(client, directory, services):
    before = head(services)
    for authorization in ("", "Bearer nope", f"Bearer {directory.token}x"):
        headers = directory.headers(key()) | {"Authorization": authorization}
        assert post(client, ADD, b"{", headers).status_code == 401
    assert head(services) == before
