"""The answers a call can have (SPEC §1): 200 with its document, 404 for an unknown person
or community, 409 for an email two people share; what each writes to the log. Through the
app factory, on both stores."""

import uuid
from typing import Any

import pytest

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
    key,
    notes,
    pointer,
    post,
)


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
