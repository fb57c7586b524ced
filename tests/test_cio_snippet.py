"""`pm-ops cio snippet`: the Customer.io Webhook action, and what Customer.io would send
from it (rendered with a real Liquid engine) is accepted by the API on both stores."""

import json
import os
import subprocess
import uuid
from typing import Any

import liquid
import pytest

from tests.server import pm_ops

PUBLIC_URL = "https://app.letsplaymoney.com"
HEADERS = [
    ("Content-Type", "application/json"),
    ("Authorization", "Bearer <workspace token>"),
    ("X-CIO-Idempotency-Key", "{{ event.delivery_id }}"),
]


def snippet(*args: str, public_url: str = PUBLIC_URL) -> subprocess.CompletedProcess:
    return subprocess.run(
        [pm_ops(), "cio", "snippet", *args],
        env={**os.environ, "OPS_PUBLIC_URL": public_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def snippet_json(*args: str) -> dict[str, Any]:
    run = snippet(*args, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_add_member_prints_the_four_parts_in_the_uis_order():
    run = snippet("add-member", "--community", "42")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    expected_in_order = [
        "1. Method (dropdown)",
        "POST",
        "2. URL",
        "https://app.letsplaymoney.com/api/v1/ops/people/communities/add",
        "3. Headers (click Add header for each of these 3 rows: Name, Value)",
        "Content-Type           application/json",
        "Authorization          Bearer <workspace token>",
        "X-CIO-Idempotency-Key  {{ event.delivery_id }}",
        "4. Body (paste into the body editor)",
        "{",
        '  "data": {',
        '    "type": "communityMembership",',
        '    "attributes": {',
        '      "personId": {{ customer.id }},',
        '      "communityId": 42',
        "    }",
        "  }",
        "}",
    ]
    positions = [lines.index(line) for line in expected_in_order]
    assert positions == sorted(positions)
    # the body is printed as one block, exactly, ready to paste
    body_start = positions[expected_in_order.index("{")]
    assert lines[body_start : body_start + 9] == expected_in_order[-9:]
    assert "--email-fallback" in run.stdout  # the hint for "personId must be an integer"


def test_set_code_body_exactly_as_in_the_guide():
    data = snippet_json("set-code", "--code", "VC-Partners")
    assert data["method"] == "POST"
    assert data["url"] == "https://app.letsplaymoney.com/api/v1/ops/people/code"
    assert [(h["name"], h["value"]) for h in data["headers"]] == HEADERS
    assert data["body"] == (
        "{\n"
        '  "data": {\n'
        '    "type": "personSignupCode",\n'
        '    "attributes": {\n'
        '      "personId": {{ customer.id }},\n'
        '      "code": "VC-Partners"\n'
        "    }\n"
        "  }\n"
        "}"
    )
    cleared = snippet_json("set-code", "--clear")
    assert '"code": null' in cleared["body"]
    fallback = snippet_json("add-member", "--community", "7", "--email-fallback")
    assert '"email": "{{ customer.email }}",' in fallback["body"]
    assert "personId" not in fallback["body"]


def test_the_url_follows_ops_public_url():
    run = snippet("add-member", "--community", "42", public_url="http://ops.internal:8080/")
    assert "\nhttp://ops.internal:8080/api/v1/ops/people/communities/add\n" in run.stdout


def test_optional_workflow_header_comes_after_the_three():
    data = snippet_json("add-member", "--community", "42", "--workflow", "Welcome series")
    assert [(h["name"], h["value"]) for h in data["headers"]] == [
        *HEADERS,
        ("X-Ops-Workflow", "Welcome series"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set-code",), "--clear"),
        (("set-code", "--code", "X", "--clear"), "--clear"),
        (("set-code", "--code", " VC"), "spaces"),
        (("set-code", "--code", ""), "empty"),
        (("set-code", "--code", "x" * 65), "64"),
        (("add-member",), "--community"),
        (("add-member", "--community", "42", "--token-ref", "pmo_abc_def"), "never a real token"),
    ],
)
def test_refuses_what_would_not_work(args, message):
    run = snippet(*args)
    assert run.returncode != 0
    assert message in run.stderr
    assert run.stdout == ""


# --- what Customer.io would send from the snippet ------------------------------------


def customer_io_sends(
    data: dict[str, Any], customer: dict[str, Any], token: str
) -> tuple[str, bytes, dict[str, str]]:
    """Render the snippet the way Customer.io does: Liquid in the headers and the body."""
    context = {"customer": customer, "event": {"delivery_id": f"dlv-{uuid.uuid4()}"}}
    headers = {h["name"]: liquid.render(h["value"], **context) for h in data["headers"]}
    headers["Authorization"] = headers["Authorization"].replace("<workspace token>", token)
    body = liquid.render(data["body"], **context).encode()
    return data["url"].removeprefix(PUBLIC_URL), body, headers


def test_the_rendered_add_member_body_is_accepted(client, directory, services):
    d = directory
    data = snippet_json("add-member", "--community", str(d.community_id))
    path, body, headers = customer_io_sends(data, {"id": d.person_id}, d.token)
    result = client.simulate_post(path, body=body, headers=headers)
    assert result.status_code == 200, result.text
    assert result.json["data"]["attributes"] == {
        "personId": d.person_id,
        "communityId": d.community_id,
        "alreadyMember": False,
    }
    # Customer.io retrying the same delivery: the same key is a guaranteed no-op
    retry = client.simulate_post(path, body=body, headers=headers)
    assert retry.status_code == 200
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.content == result.content


def test_an_old_profile_fails_with_the_guides_message_and_the_fallback_works(client, directory):
    d = directory
    plain = snippet_json("add-member", "--community", str(d.community_id))
    path, body, headers = customer_io_sends(plain, {"id": d.email, "email": d.email}, d.token)
    refused = client.simulate_post(path, body=body, headers=headers)
    assert refused.status_code == 422
    assert "personId must be an integer" in refused.json["errors"][0]["detail"]

    fallback = snippet_json("add-member", "--community", str(d.community_id), "--email-fallback")
    path, body, headers = customer_io_sends(fallback, {"id": d.email, "email": d.email}, d.token)
    accepted = client.simulate_post(path, body=body, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json["data"]["attributes"]["personId"] == d.person_id


def test_the_rendered_set_code_and_clear_bodies_are_accepted(client, directory):
    d = directory
    customer = {"id": d.person_id}
    set_data = snippet_json("set-code", "--code", "VC-Partners")
    path, body, headers = customer_io_sends(set_data, customer, d.token)
    result = client.simulate_post(path, body=body, headers=headers)
    assert result.status_code == 200, result.text
    assert result.json["data"]["attributes"] == {
        "personId": d.person_id,
        "code": "VC-Partners",
        "previousCode": None,
        "changed": True,
    }
    clear_data = snippet_json("set-code", "--clear", "--workflow", "Offboarding")
    path, body, headers = customer_io_sends(clear_data, customer, d.token)
    cleared = client.simulate_post(path, body=body, headers=headers)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json["data"]["attributes"]["previousCode"] == "VC-Partners"
    assert cleared.json["data"]["attributes"]["code"] is None
