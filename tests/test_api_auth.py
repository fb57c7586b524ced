"""Who may call (SPEC §1): 401 for missing, malformed, unknown, revoked and rotated tokens;
403 for a missing scope, a source address outside the allow-list and a bad Customer.io
signature. Through the app factory, on both stores."""

import time
import uuid

import orjson
import pytest
from falcon import testing

from api.app import create_app
from api.bootstrap import build_services
from tests.conftest import add_member_body, set_code_body
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
    issue,
    key,
    post,
    sign,
    within,
)


@pytest.mark.parametrize(
    ("authorization", "phrase"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "Bearer <token>"),
        ("Bearer", "Bearer <token>"),
        ("Bearer    ", "Bearer <token>"),
        ("Token pmo_x", "Bearer <token>"),
        ("Bearer not-a-token", "invalid"),
        (f"Bearer pmo_{uuid.uuid4().hex}_guessed", "invalid"),
        ("Bearer pmo_nothex_secret", "invalid"),
    ],
)
def test_missing_or_malformed_or_unknown_tokens_are_401(
    client, directory, services, authorization, phrase
):
    headers = directory.headers(key())
    if authorization is None:
        del headers["Authorization"]
    else:
        headers["Authorization"] = authorization
    before = head(services)
    result = post(client, ADD, add_body(directory), headers)
    error = error_of(result, 401, "token_invalid", phrase)
    assert result.headers["WWW-Authenticate"].startswith("Bearer")
    assert header_source(error) == "Authorization"
    assert head(services) == before, "a 401 must write nothing to the log"


def test_a_known_token_with_a_wrong_secret_is_401(client, directory, services):
    prefix = directory.token.rsplit("_", 1)[0]
    before = head(services)
    result = post(client, ADD, add_body(directory), directory.headers(token=f"{prefix}_wrong"))
    error_of(result, 401, "token_invalid", "invalid, revoked or has been rotated")
    assert result.headers["WWW-Authenticate"].startswith("Bearer")
    assert head(services) == before


def test_a_revoked_token_is_refused_within_5_seconds(client, directory, services, config):
    name = f"revoke-{uuid.uuid4().hex[:8]}"
    token = issue(services, name)
    assert post(client, ADD, add_body(directory), directory.headers(token=token)).status_code == 200
    services.app.revoke_token(name)

    def refused(through: testing.TestClient) -> bool:
        result = post(through, ADD, add_body(directory), directory.headers(token=token))
        if result.status_code == 200:
            return False
        error_of(result, 401, "token_invalid", "revoked")
        assert result.headers["WWW-Authenticate"].startswith("Bearer")
        return True

    assert within(5, lambda: refused(client))
    other_worker = build_services(config, create_tables=False)
    try:
        assert refused(testing.TestClient(create_app(other_worker)))
    finally:
        other_worker.close()


def test_a_rotated_token_is_refused_and_its_replacement_accepted(client, directory, services):
    name = f"rotate-{uuid.uuid4().hex[:8]}"
    old = issue(services, name)
    assert post(client, ADD, add_body(directory), directory.headers(token=old)).status_code == 200
    new = services.app.rotate_token(name)
    assert new != old

    def status(token: str) -> int:
        return post(client, ADD, add_body(directory), directory.headers(token=token)).status_code

    assert within(5, lambda: status(old) == 401)
    assert within(5, lambda: status(new) == 200)
    assert status(old) == 401


def test_a_rotated_token_works_at_once_where_the_old_value_was_cached(client, directory, services):
    name = f"rotate-{uuid.uuid4().hex[:8]}"
    old = issue(services, name)
    assert post(client, ADD, add_body(directory), directory.headers(token=old)).status_code == 200
    new = services.app.rotate_token(name)
    result = post(client, ADD, add_body(directory), directory.headers(token=new))
    assert result.status_code == 200


@pytest.mark.parametrize(
    ("path", "scopes", "missing_scope"),
    [(ADD, ("code:set",), "community:add"), (CODE, ("community:add",), "code:set")],
)
def test_a_token_without_the_scope_is_403_forbidden(
    client, directory, services, path, scopes, missing_scope
):
    token = directory.issue(scopes=scopes)
    body = add_body(directory) if path == ADD else set_code_body(directory.person_id, code="X-1")
    result = post(client, path, body, directory.headers(key(), token=token))
    error = error_of(result, 403, "forbidden", missing_scope, "Tell engineering")
    assert header_source(error) == "Authorization"
    assert count(services, "Person.MemberAdded") == 0
    assert count(services, "Person.SignupCodeChanged") == 0
    rejected = events(services, "RejectedCall.Recorded")
    assert [(e.status, e.code) for e in rejected] == [(403, "forbidden")]


def test_the_source_address_allow_list_blocks_and_admits(client, directory, services):
    token = directory.issue(allow_cidrs=["203.0.113.0/24", "2001:db8::/32"])
    headers = directory.headers(token=token)
    result = post(client, ADD, add_body(directory), headers)  # TestClient: 127.0.0.1
    error_of(result, 403, "blocked", "address", "Tell engineering")
    assert count(services, "Person.MemberAdded") == 0
    assert [e.code for e in events(services, "RejectedCall.Recorded")] == ["blocked"]
    for address in ("10.0.0.1", "203.0.114.1", "2001:db9::1"):
        error_of(
            post(client, ADD, add_body(directory), headers, remote_addr=address), 403, "blocked"
        )

    allowed = post(client, ADD, add_body(directory), headers, remote_addr="203.0.113.77")
    assert attributes(allowed)["alreadyMember"] is False
    ipv6 = post(client, ADD, add_body(directory), headers, remote_addr="2001:db8::5")
    assert attributes(ipv6)["alreadyMember"] is True
    [added] = events(services, "Person.MemberAdded")
    assert added.meta["source_address"] == "203.0.113.77"


def test_customer_io_signature_is_checked(client, directory, services):
    secret = uuid.uuid4().hex
    token = directory.issue(cio_signing_key=secret)
    raw = orjson.dumps(add_body(directory))
    stamp = str(int(time.time()))

    def call(body: bytes, **extra: str) -> testing.Result:
        return post(client, ADD, body, directory.headers(key(), token=token, **extra))

    missing = call(raw)
    assert header_source(error_of(missing, 403, "blocked", "X-CIO-Signature")) == "X-CIO-Signature"
    only_signature = call(raw, **{"X-CIO-Signature": sign(secret, stamp, raw)})
    error_of(only_signature, 403, "blocked")
    wrong_key = call(
        raw, **{"X-CIO-Timestamp": stamp, "X-CIO-Signature": sign("other", stamp, raw)}
    )
    error = error_of(wrong_key, 403, "blocked", "signature check failed")
    assert header_source(error) == "X-CIO-Signature"
    other_body = orjson.dumps(add_member_body(directory.person_id, directory.community_id + 1))
    tampered = call(
        raw, **{"X-CIO-Timestamp": stamp, "X-CIO-Signature": sign(secret, stamp, other_body)}
    )
    error_of(tampered, 403, "blocked")
    other_stamp = call(
        raw, **{"X-CIO-Timestamp": str(int(stamp) + 1), "X-CIO-Signature": sign(secret, stamp, raw)}
    )
    error_of(other_stamp, 403, "blocked")
    assert count(services, "Person.MemberAdded") == 0

    good = call(raw, **{"X-CIO-Timestamp": stamp, "X-CIO-Signature": sign(secret, stamp, raw)})
    assert attributes(good)["alreadyMember"] is False
    upper = call(
        raw, **{"X-CIO-Timestamp": stamp, "X-CIO-Signature": sign(secret, stamp, raw).upper()}
    )
    assert attributes(upper)["alreadyMember"] is True
    assert count(services, "Person.MemberAdded") == 1
