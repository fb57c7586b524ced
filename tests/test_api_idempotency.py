"""Idempotency keys (SPEC §1): which header gives the key, what a valid key is, a replay is
the stored answer byte for byte and writes nothing, a key reused for another request is
422, a key is scoped to its token's owner, refusals before the domain are not stored.
Through the app factory, on both stores."""

import pytest

from commands.application import PersonRow
from tests.conftest import add_member_body, new_id, set_code_body
from tests.helpers import (
    ADD,
    CODE,
    add_body,
    attributes,
    count,
    error_of,
    events,
    head,
    header_source,
    key,
    post,
)


@pytest.mark.parametrize(
    "header", ["X-CIO-Idempotency-Key", "Idempotency-Key", "X-CIO-Delivery-Id"]
)
def test_a_reused_idempotency_key_with_another_body_is_422(client, directory, services, header):
    value = key()
    headers = directory.headers(**{header: value})
    first = post(client, CODE, set_code_body(directory.person_id, code="First"), headers)
    assert attributes(first)["changed"] is True
    second = post(client, CODE, set_code_body(directory.person_id, code="Second"), headers)
    error = error_of(second, 422, "idempotency_key_reused", value, "different request")
    assert header_source(error) == header
    other_path = post(client, ADD, add_body(directory), headers)
    assert header_source(error_of(other_path, 422, "idempotency_key_reused")) == header
    assert [e.new_code for e in events(services, "Person.SignupCodeChanged")] == ["First"]
    assert count(services, "Person.MemberAdded") == 0
    rejected = events(services, "RejectedCall.Recorded")
    assert [e.code for e in rejected] == ["idempotency_key_reused"] * 2
    assert rejected[0].meta["idempotency_key"] == value


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-CIO-Idempotency-Key", "k" * 256),
        ("Idempotency-Key", "k" * 256),
        ("X-CIO-Delivery-Id", "k" * 300),
        ("X-CIO-Idempotency-Key", "caf\u00e9"),
        ("X-CIO-Idempotency-Key", "a\x7fb"),
        ("X-CIO-Idempotency-Key", "a\tb"),
    ],
)
def test_a_bad_idempotency_key_is_422_naming_the_header(client, directory, services, header, value):
    error = error_of(
        post(client, ADD, add_body(directory), directory.headers(**{header: value})),
        422,
        "invalid_field",
        header,
        "255",
    )
    assert header_source(error) == header
    assert count(services, "Person.MemberAdded") == 0


def test_a_255_character_key_is_accepted(client, directory):
    headers = directory.headers("k" * 255)
    first = post(client, ADD, add_body(directory), headers)
    assert attributes(first)["alreadyMember"] is False
    assert post(client, ADD, add_body(directory), headers).headers["Idempotent-Replayed"] == "true"


def test_a_replay_is_byte_identical_and_writes_nothing(client, directory, services):
    value = key()
    body = set_code_body(directory.person_id, code="VC-Partners")
    first = post(client, CODE, body, directory.headers(value))
    assert attributes(first)["changed"] is True
    written = head(services)
    for _ in range(3):
        again = post(client, CODE, body, directory.headers(value))
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
    assert head(services) == written
    # a later change, then a late retry of the first call: replayed, never applied again
    post(client, CODE, set_code_body(directory.person_id, code="Angels"), directory.headers(key()))
    late = post(client, CODE, body, directory.headers(value))
    assert late.content == first.content
    assert [e.new_code for e in events(services, "Person.SignupCodeChanged")] == [
        "VC-Partners",
        "Angels",
    ]


def test_the_key_is_scoped_to_the_token_owner(client, directory, services):
    value = key()
    other = directory.issue()
    first = post(client, ADD, add_body(directory), directory.headers(value))
    second = post(client, ADD, add_body(directory), directory.headers(value, token=other))
    assert attributes(first)["alreadyMember"] is False
    assert attributes(second)["alreadyMember"] is True
    assert "Idempotent-Replayed" not in second.headers
    different = post(
        client,
        CODE,
        set_code_body(directory.person_id, code="X"),
        directory.headers(value, token=directory.issue()),
    )
    assert attributes(different)["changed"] is True
    assert count(services, "Delivery.Recorded") == 3


def test_an_empty_key_header_falls_back_to_the_next(client, directory, services):
    body = add_body(directory)
    quoted = directory.headers(**{"X-CIO-Idempotency-Key": "", "Idempotency-Key": '"ietf-key-1"'})
    first = post(client, ADD, body, quoted)
    assert attributes(first)["alreadyMember"] is False
    bare = directory.headers(**{"X-CIO-Idempotency-Key": "  ", "Idempotency-Key": "ietf-key-1"})
    replay = post(client, ADD, body, bare)
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"

    code = set_code_body(directory.person_id, code="VC")
    delivery = directory.headers(
        **{"X-CIO-Idempotency-Key": "", "Idempotency-Key": "", "X-CIO-Delivery-Id": "dlv-1"}
    )
    first_code = post(client, CODE, code, delivery)
    assert attributes(first_code)["changed"] is True
    again = post(client, CODE, code, directory.headers(**{"X-CIO-Delivery-Id": "dlv-1"}))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first_code.content

    # the first non-empty header wins
    both = directory.headers(**{"X-CIO-Idempotency-Key": "cio-1", "Idempotency-Key": "ietf-key-1"})
    assert "Idempotent-Replayed" not in post(client, ADD, body, both).headers

    keys = [e.meta["idempotency_key"] for e in events(services, "Delivery.Recorded")]
    assert keys == ["ietf-key-1", "dlv-1", "cio-1"]
    [added] = events(services, "Person.MemberAdded")
    assert added.meta["idempotency_key"] == "ietf-key-1"


def test_not_found_and_ambiguous_outcomes_are_stored_and_replayed(client, directory, services):
    newcomer = new_id()
    body = add_member_body(newcomer, directory.community_id)
    value = key()
    first = post(client, ADD, body, directory.headers(value))
    error_of(first, 404, "person_not_found")
    services.app.import_people([PersonRow(2, newcomer, f"n{newcomer}@example.com")])
    replay = post(client, ADD, body, directory.headers(value))
    assert replay.status_code == 404
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    fresh = post(client, ADD, body, directory.headers(key()))
    assert attributes(fresh)["alreadyMember"] is False

    ambiguous = add_member_body(community=directory.community_id, email=directory.shared_email)
    value = key()
    first = post(client, ADD, ambiguous, directory.headers(value))
    error_of(first, 409, "email_ambiguous")
    replay = post(client, ADD, ambiguous, directory.headers(value))
    assert (replay.status_code, replay.content) == (409, first.content)
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_a_refusal_before_the_domain_is_not_stored_under_the_key(client, directory, services):
    value = key()
    broken = (
        b'{"data": {"type": "communityMembership", "attributes": '
        b'{"personId": ' + str(directory.person_id).encode() + b', "communityId": }}}'
    )
    error_of(post(client, ADD, broken, directory.headers(value)), 422, "invalid_field")
    quoted = add_member_body(directory.person_id, str(directory.community_id))
    error_of(post(client, ADD, quoted, directory.headers(value)), 422, "invalid_field")
    plain = directory.headers(value, **{"Content-Type": "text/plain"})
    error_of(post(client, ADD, add_body(directory), plain), 415, "unsupported_media_type")
    corrected = post(client, ADD, add_body(directory), directory.headers(value))
    assert attributes(corrected)["alreadyMember"] is False
    assert "Idempotent-Replayed" not in corrected.headers
    assert (
        post(client, ADD, add_body(directory), directory.headers(value)).content
        == corrected.content
    )
    assert count(services, "Person.MemberAdded") == 1
    assert count(services, "Delivery.Recorded") == 1


@pytest.mark.parametrize("config", ["postgres"], indirect=True)  # SQLite prepares nothing
def test_calls_survive_a_session_that_forgot_its_prepared_statements(client, directory, services):
    """A request's read is a statement prepared once per connection; a session reset
    (DEALLOCATE ALL, as a connection pooler may run) must not break the next call."""
    headers = directory.headers(key=key())
    first = post(client, ADD, add_body(directory), headers)
    assert first.status_code == 200
    pool = services.app.recorder.datastore.pool
    connections = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
    for conn in connections:
        conn.execute("DEALLOCATE ALL")
        pool.putconn(conn)
    again = post(client, ADD, add_body(directory), headers)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.text == first.text
    fresh = post(client, ADD, add_body(directory), directory.headers(key=key()))
    assert attributes(fresh)["alreadyMember"] is True
