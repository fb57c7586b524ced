"""Input that real clients send and that once slipped through: each answered with a
clear 422 (or accepted), never a 500, and never stored where it could stall a projection."""

import http.client
import json
import urllib.parse

import orjson
import pytest

from tests.conftest import add_member_body, set_code_body
from tests.server import running_server

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"


def error(result, status: int, code: str) -> dict:
    assert result.status_code == status, result.text
    [err] = result.json["errors"]
    assert err["code"] == code
    return err


@pytest.mark.parametrize("workflow", ["a\u0000b", "line\nbreak", "esc\u001b[31mred"])
def test_a_workflow_with_control_characters_is_refused(client, directory, workflow):
    body = {**set_code_body(directory.person_id, code="X"), "meta": {"workflow": workflow}}
    err = error(
        client.simulate_post(CODE, json=body, headers=directory.headers()), 422, "invalid_field"
    )
    assert err["source"] == {"pointer": "/meta/workflow"}
    assert "control characters" in err["detail"]


def test_a_utf8_workflow_header_is_kept_as_sent(client, directory, services):
    name = "Welcome série"
    headers = directory.headers(**{"X-Ops-Workflow": name.encode().decode("latin-1")})
    result = client.simulate_post(
        CODE, json=set_code_body(directory.person_id, code="W"), headers=headers
    )
    assert result.status_code == 200
    [changed] = [
        services.app.mapper.to_domain_event(n)
        for n in services.app.recorder.select_notifications(1, 10_000)
        if n.topic.endswith("SignupCodeChanged")
    ]
    assert changed.meta["workflow"] == name


def test_a_deeply_nested_type_is_a_422_not_a_500(client, directory):
    depth = 300
    body = (
        '{"data":{"type":'
        + "[" * depth
        + "]" * depth
        + ',"attributes":{"personId":1,"communityId":2}}}'
    )
    err = error(
        client.simulate_post(ADD, body=body, headers=directory.headers()), 422, "wrong_type"
    )
    assert "a list" in err["detail"] and len(err["detail"]) < 200


def test_a_missing_comma_is_malformed_json_with_its_position(client, directory):
    body = (
        '{"data":{"type":"communityMembership","attributes":{"personId": 1001 "communityId": 42}}}'
    )
    err = error(
        client.simulate_post(ADD, body=body, headers=directory.headers()), 422, "malformed_json"
    )
    assert "line 1, column" in err["detail"]
    assert "email" not in err["detail"]


def test_a_number_too_large_for_an_id_says_so(client, directory):
    body = '{"data":{"type":"communityMembership","attributes":{"personId": 123456789012345678901234567890, "communityId": 42}}}'
    err = error(
        client.simulate_post(ADD, body=body, headers=directory.headers()), 422, "invalid_field"
    )
    assert "personId must be an integer no larger than" in err["detail"]


def test_the_word_null_in_quotes_does_not_become_a_code(client, directory):
    result = client.simulate_post(
        CODE, json=set_code_body(directory.person_id, code="null"), headers=directory.headers()
    )
    err = error(result, 422, "invalid_field")
    assert '"code": null' in err["detail"]


def test_a_chunked_body_is_read_by_the_real_server(config, directory):
    body = orjson.dumps(add_member_body(directory.person_id, directory.community_id))
    with running_server(config.database_url, "--no-projections") as base:
        url = urllib.parse.urlsplit(base)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request(
            "POST",
            ADD,
            body=iter([body[:20], body[20:]]),
            headers=directory.headers(),
            encode_chunked=True,
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        assert answer["data"]["attributes"]["alreadyMember"] is False
        big = b'{"data": ' + b" " * 20_000 + b"}"
        connection.request(
            "POST", ADD, body=iter([big]), headers=directory.headers(), encode_chunked=True
        )
        response = connection.getresponse()
        assert response.status == 413
        response.read()
        connection.close()


def test_directory_and_token_text_with_control_characters_is_refused(tmp_path):
    import os
    import subprocess

    from tests.server import pm_ops

    env = {**os.environ, "OPS_DATABASE_URL": f"sqlite:///{tmp_path}/ops.db"}
    communities = tmp_path / "communities.csv"
    communities.write_text("id,name\n5,Fine\n6,bad\x00name\n")
    imported = subprocess.run(
        [pm_ops(), "directory", "import", "--communities", str(communities)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert imported.returncode != 0
    assert "line 3: name contains control characters" in imported.stderr
    issued = subprocess.run(
        [pm_ops(), "tokens", "issue", "--name", "a\x01b", "--actor", "x"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert issued.returncode != 0 and "control characters" in issued.stderr


def test_a_byte_order_mark_is_ignored_and_a_non_utf8_charset_refused(client, directory):
    body = b"\xef\xbb\xbf" + orjson.dumps(set_code_body(directory.person_id, code="BOM"))
    assert client.simulate_post(CODE, body=body, headers=directory.headers()).status_code == 200
    latin = directory.headers(**{"Content-Type": "application/json; charset=latin-1"})
    err = error(client.simulate_post(CODE, body=body, headers=latin), 415, "unsupported_media_type")
    assert "UTF-8" in err["detail"]
    utf8 = directory.headers(**{"Content-Type": 'application/json; charset="UTF-8"'})
    assert client.simulate_post(CODE, body=body, headers=utf8).status_code == 200
