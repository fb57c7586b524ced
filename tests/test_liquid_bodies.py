"""The guide's Customer.io bodies and headers, rendered by a real Liquid engine
(python-liquid) the way Customer.io renders them, then sent to the app."""

import uuid
from typing import Any

import orjson
import pytest
from falcon import testing
from liquid import Template

from tests.conftest import Directory

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"

# Word for word from the guide (reference/000_386f453d40e83e6c.txt), with the
# community number the marketer pastes in.
ADD_TEMPLATE = """{
"data": {
"type": "communityMembership",
"attributes": {
"personId": {{ customer.id }},
"communityId": COMMUNITY
}
}
}"""

CODE_TEMPLATE = """{
"data": {
"type": "personSignupCode",
"attributes": {
"personId": {{ customer.id }},
"code": "VC-Partners"
}
}
}"""

# The guide's fallback: send "email": "{{ customer.email }}" instead of personId.
ADD_BY_EMAIL_TEMPLATE = ADD_TEMPLATE.replace(
    '"personId": {{ customer.id }}', '"email": "{{ customer.email }}"'
)
CLEAR_TEMPLATE = CODE_TEMPLATE.replace('"VC-Partners"', "null")
# A marketer who puts the code in a Liquid variable (quoted, or not).
CODE_FROM_VARIABLE = CODE_TEMPLATE.replace('"VC-Partners"', '"{{ event.code }}"')
CODE_FROM_BARE_VARIABLE = CODE_TEMPLATE.replace('"VC-Partners"', "{{ event.code }}")

HEADER_TEMPLATES = {
    "Content-Type": "application/json",
    "Authorization": "Bearer {{ token }}",
    "X-CIO-Idempotency-Key": "{{ event.delivery_id }}",
}


def render(template: str, community: int = 0, **context: Any) -> bytes:
    return Template(template.replace("COMMUNITY", str(community))).render(**context).encode()


def headers(directory: Directory, delivery_id: str = "", **extra: str) -> dict[str, str]:
    rendered = {
        name: Template(value).render(token=directory.token, event={"delivery_id": delivery_id})
        for name, value in HEADER_TEMPLATES.items()
    }
    return rendered | extra


def delivery() -> str:
    return f"dlv_{uuid.uuid4().hex}"


def only_error(result: testing.Result, status: int, code: str) -> dict[str, Any]:
    assert result.status_code == status, result.text
    assert result.headers["Content-Type"] == "application/vnd.api+json"
    [error] = result.json["errors"]
    assert (error["status"], error["code"]) == (str(status), code)
    return error


def topics(directory: Directory, suffix: str) -> int:
    notes = directory.services.app.recorder.select_notifications(1, 100_000)
    return sum(1 for n in notes if n.topic.endswith(suffix))


def test_the_rendered_add_body_with_a_numeric_id_adds_the_person(client, directory):
    raw = render(ADD_TEMPLATE, directory.community_id, customer={"id": directory.person_id})
    assert f'"personId": {directory.person_id},'.encode() in raw
    first = client.simulate_post(ADD, body=raw, headers=headers(directory, delivery()))
    assert first.status_code == 200, first.text
    assert first.json["data"]["attributes"] == {
        "personId": directory.person_id,
        "communityId": directory.community_id,
        "alreadyMember": False,
    }
    again = client.simulate_post(ADD, body=raw, headers=headers(directory, delivery()))
    assert again.json["data"]["attributes"]["alreadyMember"] is True
    assert topics(directory, "Person.MemberAdded") == 1


def test_a_customer_io_retry_of_the_same_delivery_is_replayed(client, directory):
    raw = render(CODE_TEMPLATE, customer={"id": directory.person_id})
    dlv = delivery()
    first = client.simulate_post(CODE, body=raw, headers=headers(directory, dlv))
    retry = client.simulate_post(CODE, body=raw, headers=headers(directory, dlv))
    assert first.json["data"]["attributes"]["changed"] is True
    assert retry.content == first.content
    assert retry.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("template", [ADD_TEMPLATE, CODE_TEMPLATE])
def test_an_email_in_customer_id_is_a_422_pointing_to_the_email_body(client, directory, template):
    raw = render(template, directory.community_id, customer={"id": directory.email})
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)  # really invalid JSON, as Customer.io sends it
    path = ADD if template is ADD_TEMPLATE else CODE
    result = client.simulate_post(path, body=raw, headers=headers(directory, delivery()))
    error = only_error(result, 422, "invalid_field")
    assert "personId must be an integer" in error["detail"]
    assert '"email"' in error["detail"]
    assert "{{ customer.email }}" in error["detail"]
    assert error["source"] == {"pointer": "/data/attributes/personId"}


@pytest.mark.parametrize("customer", [{"id": ""}, {"id": None}, {}])
@pytest.mark.parametrize("template", [ADD_TEMPLATE, CODE_TEMPLATE])
def test_an_empty_customer_id_is_a_422_saying_person_id_is_empty(
    client, directory, template, customer
):
    raw = render(template, directory.community_id, customer=customer)
    assert b'"personId": ,' in raw
    path = ADD if template is ADD_TEMPLATE else CODE
    result = client.simulate_post(path, body=raw, headers=headers(directory, delivery()))
    error = only_error(result, 422, "invalid_field")
    assert "personId is empty" in error["detail"]
    assert error["source"] == {"pointer": "/data/attributes/personId"}
    assert topics(directory, "Person.MemberAdded") == 0
    assert topics(directory, "Person.SignupCodeChanged") == 0


def test_the_email_fallback_body_works(client, directory):
    raw = render(
        ADD_BY_EMAIL_TEMPLATE,
        directory.community_id,
        customer={"id": directory.email, "email": directory.email.upper()},
    )
    result = client.simulate_post(ADD, body=raw, headers=headers(directory, delivery()))
    assert result.status_code == 200, result.text
    assert result.json["data"]["attributes"]["personId"] == directory.person_id


def test_the_email_fallback_with_a_shared_email_says_send_the_id(client, directory):
    raw = render(
        ADD_BY_EMAIL_TEMPLATE, directory.community_id, customer={"email": directory.shared_email}
    )
    result = client.simulate_post(ADD, body=raw, headers=headers(directory, delivery()))
    error = only_error(result, 409, "email_ambiguous")
    assert "Play Money ID" in error["detail"]


def test_the_email_fallback_with_an_empty_email_is_a_422(client, directory):
    raw = render(ADD_BY_EMAIL_TEMPLATE, directory.community_id, customer={})
    result = client.simulate_post(ADD, body=raw, headers=headers(directory, delivery()))
    error = only_error(result, 422, "invalid_field")
    assert "email is empty" in error["detail"]


def test_the_clear_body_clears_the_code(client, directory):
    set_raw = render(CODE_TEMPLATE, customer={"id": directory.person_id})
    client.simulate_post(CODE, body=set_raw, headers=headers(directory, delivery()))
    raw = render(CLEAR_TEMPLATE, customer={"id": directory.person_id})
    result = client.simulate_post(CODE, body=raw, headers=headers(directory, delivery()))
    assert result.json["data"]["attributes"] == {
        "personId": directory.person_id,
        "code": None,
        "previousCode": "VC-Partners",
        "changed": True,
    }


@pytest.mark.parametrize(
    ("template", "event"),
    [
        (CODE_FROM_VARIABLE, {}),
        (CODE_FROM_VARIABLE, {"code": ""}),
        (CODE_FROM_VARIABLE, {"code": "   "}),
        (CODE_FROM_VARIABLE, {"code": None}),
        (CODE_FROM_BARE_VARIABLE, {}),
        (CODE_FROM_BARE_VARIABLE, {"code": ""}),
    ],
)
def test_a_code_variable_that_rendered_empty_never_clears(client, directory, template, event):
    first = render(CODE_TEMPLATE, customer={"id": directory.person_id})
    client.simulate_post(CODE, body=first, headers=headers(directory, delivery()))
    raw = render(template, customer={"id": directory.person_id}, event=event)
    result = client.simulate_post(CODE, body=raw, headers=headers(directory, delivery()))
    assert result.status_code == 422, result.text
    [error] = result.json["errors"]
    assert error["detail"].strip()
    if template is CODE_FROM_VARIABLE:
        assert error["code"] == "invalid_field"
        assert "code is empty" in error["detail"]
        assert '"code": null' in error["detail"]
        assert error["source"] == {"pointer": "/data/attributes/code"}
    again = client.simulate_post(CODE, body=first, headers=headers(directory, delivery()))
    assert again.json["data"]["attributes"]["changed"] is False
    assert again.json["data"]["attributes"]["previousCode"] == "VC-Partners"
    assert topics(directory, "Person.SignupCodeChanged") == 1


def test_a_code_variable_with_a_value_sets_it(client, directory):
    raw = render(CODE_FROM_VARIABLE, customer={"id": directory.person_id}, event={"code": "Angels"})
    result = client.simulate_post(CODE, body=raw, headers=headers(directory, delivery()))
    assert result.json["data"]["attributes"]["code"] == "Angels"


def test_an_empty_delivery_id_falls_back_to_the_delivery_header(client, directory):
    raw = render(CODE_TEMPLATE, customer={"id": directory.person_id})
    rendered = headers(directory, "", **{"X-CIO-Delivery-Id": "dlv-fallback-1"})
    assert rendered["X-CIO-Idempotency-Key"] == ""
    first = client.simulate_post(CODE, body=raw, headers=rendered)
    assert first.status_code == 200, first.text
    retry = client.simulate_post(CODE, body=raw, headers=rendered)
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content


def test_an_empty_delivery_id_and_no_fallback_still_works(client, directory):
    raw = render(ADD_TEMPLATE, directory.community_id, customer={"id": directory.person_id})
    result = client.simulate_post(ADD, body=raw, headers=headers(directory, ""))
    assert result.status_code == 200, result.text
    assert "Idempotent-Replayed" not in result.headers


def test_liquid_left_unrendered_by_a_script_is_named(client, directory):
    body = (
        '{"data": {"type": "communityMembership", "attributes": '
        '{"personId": {{ customer.id }}, "communityId": 42}}}'
    )
    result = client.simulate_post(
        "/api/v1/ops/people/communities/add", body=body, headers=directory.headers()
    )
    assert result.status_code == 422
    error = result.json["errors"][0]
    assert error["code"] == "malformed_json"
    assert "still contains Liquid" in error["detail"]


def test_a_url_pasted_with_a_trailing_slash_still_works(client, directory):
    body = {
        "data": {
            "type": "communityMembership",
            "attributes": {"personId": directory.person_id, "communityId": directory.community_id},
        }
    }
    result = client.simulate_post(
        "/api/v1/ops/people/communities/add/", json=body, headers=directory.headers()
    )
    assert result.status_code == 200
    assert result.json["data"]["attributes"]["alreadyMember"] is False
