"""Whatever arrives — random JSON, random bytes, random headers — the answer is a
200 or a JSON:API error with a plain-English detail; never a 5xx."""

import json
import string
from typing import Any

import pytest
from falcon import testing
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from tests.conftest import IN_CI, Directory

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"
PATHS = st.sampled_from([ADD, CODE])

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    # CI replays a fixed set of examples, so a red build always reproduces; runs on a
    # laptop explore new ones.
    derandomize=IN_CI,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
attribute_values = (
    json_scalars
    | st.integers(min_value=1, max_value=10**12)
    | st.sampled_from(["VC-Partners", " VC ", "", "42", "jane@example.com", "\u0000", "x" * 65])
    | st.integers(min_value=2**64, max_value=2**70)  # beyond what JSON parsers keep exact
)
near_valid_bodies = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries(
            {
                "type": st.sampled_from(["communityMembership", "personSignupCode"]) | json_values,
                "attributes": st.dictionaries(
                    st.sampled_from(["personId", "email", "communityId", "code", "other"]),
                    attribute_values,
                    max_size=4,
                )
                | json_values,
            }
        )
    },
    optional={
        "meta": st.dictionaries(st.sampled_from(["workflow", "x"]), json_values) | json_values
    },
)
# Header values a WSGI server can carry: latin-1 text without line breaks.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF) | st.just("\t"), max_size=300
)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.api+json",
            "text/plain",
            "",
            "application/json;;;",
            "multipart/form-data; boundary=x",
        ]
    )
    | header_text
)


def check(result: testing.Result) -> None:
    assert result.status_code < 500, result.text
    counted = currently_in_test_context()
    if counted:
        event(f"status {result.status_code}")
    assert result.headers["Content-Type"] == "application/vnd.api+json"
    document = result.json
    assert isinstance(document, dict)
    text = result.text
    for leak in ("Traceback", "pmo_", "SELECT ", "INSERT "):
        assert leak not in text
    if result.status_code == 200:
        assert set(document) == {"data"}
        assert document["data"]["type"] in ("communityMembership", "personSignupCode")
        return
    assert set(document) == {"errors"}
    [error] = document["errors"]
    if counted:
        event(f"code {error['code']}")
    assert error["status"] == str(result.status_code)
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["detail"], str) and error["detail"].strip()
    assert isinstance(error["title"], str) and error["title"].strip()


def call(
    client: testing.TestClient, directory: Directory, path: str, raw: bytes, **headers: str
) -> testing.Result:
    sent = {"Content-Type": "application/json", "Authorization": f"Bearer {directory.token}"}
    sent.update(headers)
    return client.simulate_post(path, body=raw, headers=sent)


def with_real_ids(
    body: dict[str, Any], path: str, directory: Directory, data: st.DataObject
) -> bytes:
    if data.draw(st.integers(0, 9)) < 7:  # mostly the right type, so later checks are reached
        body["data"]["type"] = "communityMembership" if path == ADD else "personSignupCode"
    attributes = body["data"].get("attributes")
    if isinstance(attributes, dict) and data.draw(st.booleans()):
        attributes["personId"] = directory.person_id
        if data.draw(st.booleans()):
            attributes["communityId"] = directory.community_id
    return json.dumps(body).encode()


@SETTINGS
@given(path=PATHS, document=json_values)
def test_random_json(client, directory, path, document):
    check(call(client, directory, path, json.dumps(document).encode()))


@SETTINGS
@given(path=PATHS, body=near_valid_bodies, data=st.data())
def test_near_valid_bodies(client, directory, path, body, data):
    check(call(client, directory, path, with_real_ids(body, path, directory, data)))


@SETTINGS
@given(path=PATHS, raw=st.binary(max_size=600))
def test_random_bytes(client, directory, path, raw):
    check(call(client, directory, path, raw))


@SETTINGS
@given(
    path=PATHS,
    position=st.integers(min_value=0, max_value=200),
    cut=st.integers(min_value=0, max_value=8),
    insert=st.text(alphabet=string.printable + "é@\u2028", max_size=12),
)
def test_mangled_guide_bodies(client, directory, path, position, cut, insert):
    """The guide's body with a few characters lost or added, like a bad Liquid render."""
    attributes = (
        f'"personId": {directory.person_id},\n"communityId": {directory.community_id}'
        if path == ADD
        else f'"personId": {directory.person_id},\n"code": "VC-Partners"'
    )
    kind = "communityMembership" if path == ADD else "personSignupCode"
    text = f'{{\n"data": {{\n"type": "{kind}",\n"attributes": {{\n{attributes}\n}}\n}}\n}}'
    position = min(position, len(text))
    mangled = text[:position] + insert + text[position + cut :]
    check(call(client, directory, path, mangled.encode()))


@SETTINGS
@given(
    path=PATHS,
    content_type=content_types,
    cio_key=header_text,
    ietf_key=header_text,
    delivery_id=header_text,
    workflow=header_text,
    request_id=header_text,
    authorization=st.none() | header_text,
    data=st.data(),
)
def test_random_headers(
    client,
    directory,
    path,
    content_type,
    cio_key,
    ietf_key,
    delivery_id,
    workflow,
    request_id,
    authorization,
    data,
):
    body = {
        "data": {
            "type": "communityMembership" if path == ADD else "personSignupCode",
            "attributes": {"personId": directory.person_id}
            | ({"communityId": directory.community_id} if path == ADD else {"code": "VC"}),
        }
    }
    headers = {
        "Content-Type": content_type,
        "X-CIO-Idempotency-Key": cio_key,
        "Idempotency-Key": ietf_key,
        "X-CIO-Delivery-Id": delivery_id,
        "X-Ops-Workflow": workflow,
        "X-Request-Id": request_id,
    }
    if authorization is not None:
        headers["Authorization"] = authorization
    chosen = data.draw(st.sets(st.sampled_from(sorted(headers))), label="headers sent")
    sent = {name: value for name, value in headers.items() if name in chosen}
    result = call(client, directory, path, json.dumps(body).encode(), **sent)
    check(result)
    if result.status_code == 200 and "X-Request-Id" in sent:
        assert result.headers["X-Request-Id"]


@pytest.mark.parametrize("path", [ADD, CODE])
def test_a_body_in_another_encoding_is_a_clear_422(client, directory, path):
    raw = '{"data": {"type": "x", "attributes": {"email": "zoë@example.com"}}}'.encode("utf-16")
    result = call(client, directory, path, raw)
    check(result)
    assert result.status_code == 422
