"""Input the API accepts and refuses (SPEC §1): media types, body size (413), content type
(415), every 422 with the detail a marketer reads and where the error points, malformed
JSON, other methods and URLs. Through the app factory, on both stores."""

import orjson
import pytest

from tests.conftest import add_member_body, set_code_body
from tests.helpers import (
    ADD,
    CODE,
    JSONAPI,
    add_body,
    attributes,
    count,
    error_of,
    header_source,
    key,
    pointer,
    post,
    with_big_int,
)


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
    raw = orjson.dumps(body) if value != 2**63 else with_big_int(body, "personId", value)
    error = error_of(
        post(client, ADD, raw, directory.headers(key())), 422, "invalid_field", *phrases
    )
    assert pointer(error) == "/data/attributes/personId"
    assert count(services, "Person.MemberAdded") == 0


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


def test_other_methods_and_urls_get_json_api_errors(client, directory):
    for method in ("GET", "PUT", "DELETE"):
        result = client.simulate_request(method, CODE, headers=directory.headers())
        error = error_of(result, 405, "method_not_allowed", "POST")
        assert result.headers["Content-Type"] == JSONAPI
        assert "source" not in error
    result = post(client, "/api/v1/ops/people/delete", add_body(directory), directory.headers())
    error_of(result, 404, "not_found", ADD, CODE)
