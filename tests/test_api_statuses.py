"""Every row of SPEC §1's status table, through the app factory, on both stores:
status, error code, the detail a marketer reads, and where the error points."""

import hashlib
import hmac
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from falcon import testing

from api.app import create_app
from api.bootstrap import Services, build_services
from api.config import Config
from commands.application import CommunityRow, PersonRow
from tests.conftest import Directory, add_member_body, new_id, set_code_body

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"
JSONAPI = "application/vnd.api+json"
LEAKS = ("Traceback", 'File "', "SELECT ", "INSERT ", "psycopg", "sqlite3", "pmo_")


# --- helpers -------------------------------------------------------------------


def post(
    client: testing.TestClient, path: str, body: Any, headers: dict[str, str], **kwargs: Any
) -> testing.Result:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    result = client.simulate_post(path, body=raw, headers=headers, **kwargs)
    assert result.status_code < 500 or result.status_code == 503, result.text
    for leak in LEAKS:
        assert leak not in result.text, f"{leak!r} leaked into {result.text}"
    assert result.headers["Content-Type"] == JSONAPI
    return result


def error_of(result: testing.Result, status: int, code: str, *phrases: str) -> dict[str, Any]:
    """The single JSON:API error of a response, checked against the contract."""
    assert result.status_code == status, result.text
    document = result.json
    assert list(document) == ["errors"]
    assert len(document["errors"]) == 1
    error = document["errors"][0]
    assert error["status"] == str(status)
    assert error["code"] == code
    assert error["title"].strip()
    assert error["detail"].strip()
    for phrase in phrases:
        assert phrase.lower() in error["detail"].lower(), error["detail"]
    return error


def pointer(error: dict[str, Any]) -> str | None:
    return error.get("source", {}).get("pointer")


def header_source(error: dict[str, Any]) -> str | None:
    return error.get("source", {}).get("header")


def attributes(result: testing.Result) -> dict[str, Any]:
    assert result.status_code == 200, result.text
    return result.json["data"]["attributes"]


def notes(services: Services) -> list[Any]:
    return list(services.app.recorder.select_notifications(1, 100_000))


def topics(services: Services) -> list[str]:
    return [n.topic for n in notes(services)]


def count(services: Services, suffix: str) -> int:
    return sum(1 for topic in topics(services) if topic.endswith(suffix))


def events(services: Services, suffix: str) -> list[Any]:
    return [
        services.app.mapper.to_domain_event(n) for n in notes(services) if n.topic.endswith(suffix)
    ]


def head(services: Services) -> int:
    return services.app.recorder.max_notification_id() or 0


def key() -> str:
    return f"k-{uuid.uuid4()}"


def within(seconds: float, check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def issue(services: Services, name: str, **options: Any) -> str:
    return services.app.issue_token(
        name=name,
        actor=options.pop("actor", "Customer.io"),
        scopes=list(options.pop("scopes", ("community:add", "code:set"))),
        allow_cidrs=options.pop("allow_cidrs", []),
        rate_limit=options.pop("rate_limit", None),
        cio_signing_key=options.pop("cio_signing_key", None),
    )


def add_person(services: Services, email: str | None = None) -> tuple[int, str]:
    person = new_id()
    address = email or f"p{person}@example.com"
    services.app.import_people([PersonRow(2, person, address)])
    return person, address


def add_body(directory: Directory) -> dict[str, Any]:
    return add_member_body(directory.person_id, directory.community_id)


# --- 200 -----------------------------------------------------------------------


def test_add_member_answers_the_documented_document_and_a_repeat_is_a_no_op(
    client, directory, services
):
    first = post(client, ADD, add_body(directory), directory.headers(key()))
    assert first.status_code == 200
    assert first.json == {
        "data": {
            "type": "communityMembership",
            "id": f"{directory.person_id}:{directory.community_id}",
            "attributes": {
                "personId": directory.person_id,
                "communityId": directory.community_id,
                "alreadyMember": False,
            },
        }
    }
    assert "Idempotent-Replayed" not in first.headers
    written = head(services)

    again = post(client, ADD, add_body(directory), directory.headers(key()))
    assert attributes(again)["alreadyMember"] is True
    assert "Idempotent-Replayed" not in again.headers  # a new key: executed, but a no-op
    without_key = post(client, ADD, add_body(directory), directory.headers())
    assert attributes(without_key)["alreadyMember"] is True

    assert count(services, "Person.MemberAdded") == 1
    new_topics = [n.topic for n in notes(services) if n.id > written]
    assert "aggregates.person:Person.MemberAdded" not in new_topics
    assert new_topics == ["aggregates.delivery:Delivery.Recorded"] * 2


def test_add_member_by_email_is_case_insensitive_and_trimmed(client, directory):
    shouted = f"  {directory.email.upper()}\t"
    result = post(
        client,
        ADD,
        add_member_body(community=directory.community_id, email=shouted),
        directory.headers(key()),
    )
    assert attributes(result) == {
        "personId": directory.person_id,
        "communityId": directory.community_id,
        "alreadyMember": False,
    }
    assert result.json["data"]["id"] == f"{directory.person_id}:{directory.community_id}"


def test_set_code_reports_previous_code_and_changed(client, directory, services):
    def set_code(code: Any) -> dict[str, Any]:
        body = set_code_body(directory.person_id, code=code)
        result = post(client, CODE, body, directory.headers(key()))
        assert result.json["data"]["type"] == "personSignupCode"
        assert result.json["data"]["id"] == str(directory.person_id)
        return attributes(result)

    assert set_code("VC-Partners") == {
        "personId": directory.person_id,
        "code": "VC-Partners",
        "previousCode": None,
        "changed": True,
    }
    assert set_code("VC-Partners") == {
        "personId": directory.person_id,
        "code": "VC-Partners",
        "previousCode": "VC-Partners",
        "changed": False,
    }
    assert set_code("Angels") == {
        "personId": directory.person_id,
        "code": "Angels",
        "previousCode": "VC-Partners",
        "changed": True,
    }
    assert set_code(None) == {
        "personId": directory.person_id,
        "code": None,
        "previousCode": "Angels",
        "changed": True,
    }
    assert set_code(None)["changed"] is False
    changes = events(services, "Person.SignupCodeChanged")
    assert [(e.previous_code, e.new_code) for e in changes] == [
        (None, "VC-Partners"),
        ("VC-Partners", "Angels"),
        ("Angels", None),
    ]


def test_set_code_by_email_and_a_64_character_code(client, directory):
    code = "C" * 64
    body = set_code_body(email=f" {directory.email.title()} ", code=code)
    result = post(client, CODE, body, directory.headers(key()))
    assert attributes(result)["personId"] == directory.person_id
    assert attributes(result)["code"] == code


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
        "Application/JSON",
    ],
)
def test_json_media_types_are_accepted(client, directory, content_type):
    headers = directory.headers(key(), **{"Content-Type": content_type})
    assert post(client, ADD, add_body(directory), headers).status_code == 200


def test_a_body_of_exactly_16_kib_is_accepted(client, directory):
    raw = orjson.dumps(add_body(directory))
    raw = raw[:-1] + b" " * (16 * 1024 - len(raw)) + b"}"
    assert len(raw) == 16 * 1024
    assert attributes(post(client, ADD, raw, directory.headers(key())))["alreadyMember"] is False


# --- 401 -----------------------------------------------------------------------


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


# --- 403 -----------------------------------------------------------------------


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


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    return hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()


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


# --- 404 / 409 -----------------------------------------------------------------


def test_unknown_person_is_404(client, directory, services):
    stranger = new_id()
    by_id = post(
        client, ADD, add_member_body(stranger, directory.community_id), directory.headers(key())
    )
    error = error_of(by_id, 404, "person_not_found", str(stranger), "Play Money ID")
    assert pointer(error) == "/data/attributes/personId"
    by_email = post(
        client,
        CODE,
        set_code_body(email=f"nobody.{uuid.uuid4().hex[:6]}@example.com", code="X"),
        directory.headers(key()),
    )
    error = error_of(by_email, 404, "person_not_found", "No person has the email")
    assert pointer(error) == "/data/attributes/email"
    assert count(services, "Person.MemberAdded") == 0
    assert count(services, "Person.SignupCodeChanged") == 0
    outcomes = [(e.status, e.outcome) for e in events(services, "Delivery.Recorded")]
    assert outcomes == [(404, "person_not_found")] * 2


def test_unknown_community_is_404(client, directory, services):
    community = new_id()
    result = post(
        client, ADD, add_member_body(directory.person_id, community), directory.headers(key())
    )
    error = error_of(result, 404, "community_not_found", f"No community with ID {community}")
    assert pointer(error) == "/data/attributes/communityId"
    assert count(services, "Person.MemberAdded") == 0


@pytest.mark.parametrize("variant", [str.lower, str.upper, lambda e: f"  {e.title()} "])
def test_an_email_shared_by_two_people_is_409(client, directory, services, variant):
    body = add_member_body(community=directory.community_id, email=variant(directory.shared_email))
    error = error_of(
        post(client, ADD, body, directory.headers(key())),
        409,
        "email_ambiguous",
        "2 different people",
        "Play Money ID",
        "personId",
    )
    assert pointer(error) == "/data/attributes/email"
    code = post(
        client,
        CODE,
        set_code_body(email=variant(directory.shared_email), code="VC"),
        directory.headers(key()),
    )
    error_of(code, 409, "email_ambiguous")
    assert count(services, "Person.MemberAdded") == 0
    assert count(services, "Person.SignupCodeChanged") == 0


# --- 413 / 415 -------------------------------------------------------------------


def test_a_body_over_16_kib_is_413(client, directory, services):
    raw = orjson.dumps(add_body(directory))
    raw = raw[:-1] + b" " * (16 * 1024 + 1 - len(raw)) + b"}"
    assert len(raw) == 16 * 1024 + 1
    error_of(post(client, ADD, raw, directory.headers(key())), 413, "body_too_large", "16 KiB")
    huge = b'{"data": "' + b"x" * 100_000 + b'"}'
    error_of(post(client, ADD, huge, directory.headers(key())), 413, "body_too_large")
    assert count(services, "Person.MemberAdded") == 0


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
)
def test_a_wrong_content_type_is_415(client, directory, services, content_type):
    headers = directory.headers(key())
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    error = error_of(
        post(client, ADD, add_body(directory), headers),
        415,
        "unsupported_media_type",
        "application/json",
    )
    assert header_source(error) == "Content-Type"
    assert count(services, "Person.MemberAdded") == 0


# --- 422 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "phrases"),
    [
        ("123", ("personId must be an integer", "without quotes")),
        (" 123 ", ("personId must be an integer", "without quotes")),
        ("abc", ("personId must be an integer",)),
        ("jane@example.com", ("personId must be an integer", '"email"')),
        (12.5, ("personId must be an integer", "decimal")),
        (123.0, ("personId must be an integer",)),
        (True, ("personId must be an integer", "true/false")),
        (False, ("personId must be an integer",)),
        (None, ("personId must be an integer", "null")),
        (0, ("personId must be an integer", "greater than 0")),
        (-7, ("personId must be an integer", "greater than 0")),
        (2**63, ("personId must be an integer",)),
        ([123], ("personId must be an integer",)),
        ({"id": 123}, ("personId must be an integer",)),
    ],
)
def test_a_bad_person_id_is_422_invalid_field(client, directory, services, value, phrases):
    body = add_member_body(community=directory.community_id, personId=value)
    raw = orjson.dumps(body) if value != 2**63 else _with_big_int(body, "personId", value)
    error = error_of(
        post(client, ADD, raw, directory.headers(key())), 422, "invalid_field", *phrases
    )
    assert pointer(error) == "/data/attributes/personId"
    assert count(services, "Person.MemberAdded") == 0


def _with_big_int(body: dict[str, Any], field: str, value: int) -> bytes:
    body["data"]["attributes"][field] = 1
    return orjson.dumps(body).replace(f'"{field}":1'.encode(), f'"{field}":{value}'.encode())


@pytest.mark.parametrize(
    ("value", "phrases"),
    [
        ("42", ("number without quotes", "42")),
        ("forty-two", ("number without quotes",)),
        (42.5, ("communityId must be an integer",)),
        (True, ("communityId must be an integer",)),
        (None, ("communityId must be an integer",)),
        (0, ("greater than 0",)),
    ],
)
def test_a_bad_community_id_is_422_invalid_field(client, directory, value, phrases):
    body = add_member_body(directory.person_id, value)
    if value is None:
        body["data"]["attributes"]["communityId"] = None
    error = error_of(
        post(client, ADD, body, directory.headers(key())), 422, "invalid_field", *phrases
    )
    assert pointer(error) == "/data/attributes/communityId"


def test_a_quoted_community_id_says_to_send_it_as_a_number(client, directory):
    body = add_member_body(directory.person_id, str(directory.community_id))
    error = error_of(
        post(client, ADD, body, directory.headers(key())),
        422,
        "invalid_field",
        "communityId",
        "as a number without quotes",
        str(directory.community_id),
    )
    assert pointer(error) == "/data/attributes/communityId"


@pytest.mark.parametrize(
    ("path", "body", "expected_pointer", "phrase"),
    [
        (ADD, add_member_body(community=1), "/data/attributes/personId", "personId is missing"),
        (ADD, add_member_body(person=1), "/data/attributes/communityId", "communityId is missing"),
        (CODE, set_code_body(code="X"), "/data/attributes/personId", "personId is missing"),
        (CODE, {"meta": {}}, "/data", '"data" object'),
        (CODE, {"data": None}, "/data", '"data" object'),
        (CODE, {"data": {"attributes": {}}}, "/data/type", "data.type is missing"),
        (CODE, {"data": {"type": "personSignupCode"}}, "/data/attributes", "data.attributes"),
    ],
)
def test_missing_fields_are_422_missing_field(
    client, directory, path, body, expected_pointer, phrase
):
    error = error_of(
        post(client, path, body, directory.headers(key())), 422, "missing_field", phrase
    )
    assert pointer(error) == expected_pointer


def test_a_missing_code_never_clears(client, directory, services):
    headers = directory.headers
    post(client, CODE, set_code_body(directory.person_id, code="Keep-Me"), headers(key()))
    missing = post(client, CODE, set_code_body(directory.person_id), headers(key()))
    error = error_of(missing, 422, "missing_field", "never clears", '"code": null')
    assert pointer(error) == "/data/attributes/code"
    check = post(client, CODE, set_code_body(directory.person_id, code="Keep-Me"), headers(key()))
    assert attributes(check)["changed"] is False
    assert count(services, "Person.SignupCodeChanged") == 1


@pytest.mark.parametrize(
    ("code", "phrases"),
    [
        ("", ("code is empty", "null")),
        ("   ", ("code is empty",)),
        ("\t\n", ("code is empty",)),
        (" VC-Partners", ("leading or trailing",)),
        ("VC-Partners ", ("leading or trailing",)),
        ("VC\nPartners", ("control characters",)),
        ("VC\tPartners", ("control characters",)),
        ("VC\u200bPartners", ("control characters",)),
        ("C" * 65, ("65 characters", "64")),
        (42, ("must be text",)),
        (True, ("must be text",)),
        (["VC"], ("must be text",)),
    ],
)
def test_a_bad_code_is_422_and_never_touches_the_code(client, directory, services, code, phrases):
    headers = directory.headers
    post(client, CODE, set_code_body(directory.person_id, code="Keep-Me"), headers(key()))
    result = post(client, CODE, set_code_body(directory.person_id, code=code), headers(key()))
    error = error_of(result, 422, "invalid_field", *phrases)
    assert pointer(error) == "/data/attributes/code"
    check = post(client, CODE, set_code_body(directory.person_id, code="Keep-Me"), headers(key()))
    assert attributes(check) == {
        "personId": directory.person_id,
        "code": "Keep-Me",
        "previousCode": "Keep-Me",
        "changed": False,
    }
    assert count(services, "Person.SignupCodeChanged") == 1


def test_other_invalid_fields_are_422(client, directory):
    both = add_member_body(directory.person_id, directory.community_id, email=directory.email)
    error = error_of(
        post(client, ADD, both, directory.headers(key())), 422, "invalid_field", "not both"
    )
    assert pointer(error) == "/data/attributes/email"
    unknown = add_member_body(directory.person_id, directory.community_id, code="VC")
    error = error_of(
        post(client, ADD, unknown, directory.headers(key())), 422, "invalid_field", "'code'"
    )
    assert pointer(error) == "/data/attributes/code"
    for bad_email, phrase in ((42, "must be text"), ("", "empty"), ("no-at-sign", "email address")):
        body = add_member_body(community=directory.community_id, email=bad_email)
        error = error_of(
            post(client, ADD, body, directory.headers(key())), 422, "invalid_field", phrase
        )
        assert pointer(error) == "/data/attributes/email"
    body = add_body(directory) | {"meta": {"workflow": 7}}
    error = error_of(post(client, ADD, body, directory.headers(key())), 422, "invalid_field")
    assert pointer(error) == "/meta/workflow"
    long_workflow = directory.headers(key(), **{"X-Ops-Workflow": "w" * 201})
    error = error_of(post(client, ADD, add_body(directory), long_workflow), 422, "invalid_field")
    assert header_source(error) == "X-Ops-Workflow"


@pytest.mark.parametrize(
    ("path", "found"),
    [(ADD, "personSignupCode"), (CODE, "communityMembership"), (ADD, "CommunityMembership")],
)
def test_the_wrong_data_type_is_422_wrong_type(client, directory, services, path, found):
    body = add_body(directory)
    body["data"]["type"] = found
    expected = "communityMembership" if path == ADD else "personSignupCode"
    error = error_of(
        post(client, path, body, directory.headers(key())), 422, "wrong_type", expected, found
    )
    assert pointer(error) == "/data/type"
    assert count(services, "Person.MemberAdded") == 0


@pytest.mark.parametrize(
    ("raw", "line", "column"),
    [
        (b'{\n  "data": {\n    "type": "communityMembership",,\n  }\n}', 3, 35),
        (b'{"data": {"type": "communityMembership"', 1, 40),
        (b"", 1, 1),
        (b"{\n\n\n  oops\n}", 4, 3),
        (b"\xff\xfe{}", 1, 1),
    ],
)
def test_malformed_json_is_422_naming_the_line_and_column(client, directory, raw, line, column):
    error = error_of(
        post(client, ADD, raw, directory.headers(key())),
        422,
        "malformed_json",
        "not valid JSON",
        f"line {line}, column {column}",
    )
    assert pointer(error) == ""


def test_json_that_is_not_an_object_is_422(client, directory):
    for raw in (b"[]", b"42", b'"data"', b"null"):
        error_of(post(client, ADD, raw, directory.headers(key())), 422, "malformed_json", '"data"')


def test_invalid_json_from_liquid_is_still_a_clear_422(client, directory):
    email_id = (
        b'{"data": {"type": "communityMembership", "attributes": '
        b'{"personId": jane@example.com, "communityId": 42}}}'
    )
    error = error_of(
        post(client, ADD, email_id, directory.headers(key())),
        422,
        "invalid_field",
        "personId must be an integer",
        '"email"',
    )
    assert pointer(error) == "/data/attributes/personId"
    for empty in (b'"personId": ,', b'"personId": }'):
        raw = (
            b'{"data": {"type": "communityMembership", "attributes": {"communityId": 42, '
            + empty
            + b"}}"
        )
        error = error_of(
            post(client, ADD, raw, directory.headers(key())),
            422,
            "invalid_field",
            "personId is empty",
        )
        assert pointer(error) == "/data/attributes/personId"


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


# --- 429 -----------------------------------------------------------------------


def test_the_per_minute_limit_is_429_with_retry_after(client, directory, services):
    if time.time() % 60 > 50:  # keep all three calls inside one minute window
        time.sleep(61 - time.time() % 60)
    token = directory.issue(rate_limit=2)
    headers = directory.headers(token=token)
    assert attributes(post(client, ADD, add_body(directory), headers))["alreadyMember"] is False
    assert attributes(post(client, ADD, add_body(directory), headers))["alreadyMember"] is True
    before = head(services)
    limited = post(client, ADD, add_body(directory), headers)
    error = error_of(limited, 429, "rate_limited", "too many requests", "Retry after")
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert str(retry_after) in error["detail"]
    assert head(services) == before, "a 429 must write nothing to the log"
    # the limit is per token: another token is unaffected
    assert post(client, ADD, add_body(directory), directory.headers()).status_code == 200


# --- 503 -----------------------------------------------------------------------


class Proxy:
    """A TCP forwarder in front of PostgreSQL that can be pulled like a cable."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(self._target)
            except OSError:
                return
            with self._lock:
                self._sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def test_an_unreachable_store_is_503_not_a_stack_trace(config, tmp_path):
    """The store goes away under a running app: PostgreSQL behind a cable that is
    pulled, SQLite whose file is overwritten. (Without a store the app cannot be
    built at all: build_services raises, so serve fails to start, which is honest.)"""
    proxy = None
    if config.is_postgres:
        parts = urlsplit(config.database_url)
        proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
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


# --- idempotency ---------------------------------------------------------------


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


# --- the log: who and why --------------------------------------------------------

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


def test_other_methods_and_urls_get_json_api_errors(client, directory):
    for method in ("GET", "PUT", "DELETE"):
        result = client.simulate_request(method, CODE, headers=directory.headers())
        error = error_of(result, 405, "method_not_allowed", "POST")
        assert result.headers["Content-Type"] == JSONAPI
        assert "source" not in error
    result = post(client, "/api/v1/ops/people/delete", add_body(directory), directory.headers())
    error_of(result, 404, "not_found", ADD, CODE)
