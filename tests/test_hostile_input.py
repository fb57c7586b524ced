"""What an attacker or a broken workflow sends, and what it must not get: a replay of an
old signed request, a whole value echoed back, an ambiguous body, an unstorable
character, a forged address, a signing key readable in the log."""

import hashlib
import hmac
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from commands.operations import ADD_MEMBER_OPERATION, SET_CODE_OPERATION
from tests.conftest import add_member_body, new_id, set_code_body
from tests.server import pm_ops

ADD = ADD_MEMBER_OPERATION.path
CODE = SET_CODE_OPERATION.path


def post(client: Any, path: str, body: Any, headers: dict[str, str]) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.simulate_post(path, body=raw, headers=headers)


def only_error(result: Any, status: int, code: str) -> dict[str, Any]:
    assert result.status_code == status, result.text
    (error,) = result.json["errors"]
    assert error["code"] == code, error
    return error


def signed(secret: str, stamp: str, raw: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + raw, hashlib.sha256)
    return {"X-CIO-Timestamp": stamp, "X-CIO-Signature": digest.hexdigest()}


def events(services: Any, name: str) -> list[Any]:
    notes = services.app.recorder.select_notifications(1, 100_000)
    return [n for n in notes if n.topic.endswith(name)]


def test_a_signed_request_is_accepted_only_while_fresh(client, directory, services):
    secret = uuid.uuid4().hex
    token = directory.issue(cio_signing_key=secret)
    raw = orjson.dumps(add_member_body(directory.person_id, directory.community_id))
    for stamp in ("1000000000", str(int(time.time()) - 301), str(int(time.time()) + 301), "soon"):
        headers = directory.headers(uuid.uuid4().hex, token=token) | signed(secret, stamp, raw)
        error = only_error(post(client, ADD, raw, headers), 403, "blocked")
        assert "5 minutes" in error["detail"]
        assert error["source"] == {"header": "X-CIO-Timestamp"}
    assert events(services, "Person.MemberAdded") == []
    fresh = directory.headers(uuid.uuid4().hex, token=token) | signed(
        secret, str(int(time.time()) - 200), raw
    )
    assert post(client, ADD, raw, fresh).status_code == 200


def test_a_signing_key_never_reaches_the_log_in_clear(client, directory, services):
    secret = f"signing-{uuid.uuid4().hex}"
    token = directory.issue(cio_signing_key=secret)
    stored = services.app.recorder.select_notifications(1, 100_000)
    assert not any(secret.encode() in bytes(n.state) for n in stored)
    raw = orjson.dumps(set_code_body(directory.person_id, code="Sealed"))
    headers = directory.headers(uuid.uuid4().hex, token=token) | signed(
        secret, str(int(time.time())), raw
    )
    assert post(client, CODE, raw, headers).status_code == 200  # the sealed key still checks


def test_the_embedded_store_keeps_its_sealing_key_beside_it_for_its_owner_only(tmp_path):
    from falcon import testing

    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.config import Config
    from commands.directory import PersonRow

    config = Config(database_url=f"sqlite:///{tmp_path}/ops.db")
    with bootstrap(config) as services:
        services.app.import_people([PersonRow(2, 1001, "ada@example.com")])
        token = services.app.issue_token("signed", "Customer.io", ["code:set"], [], None, "key-1")
    key_file = tmp_path / "ops.db.secret-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    with bootstrap(config) as services:  # a restart: the key is read back from its file
        client = testing.TestClient(create_app(services))
        raw = orjson.dumps(set_code_body(1001, code="Signed"))
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        headers |= signed("key-1", str(int(time.time())), raw)
        assert post(client, CODE, raw, headers).status_code == 200


def test_a_value_is_quoted_back_cut_short(client, directory, services):
    huge = "7" * 16_000
    body = add_member_body(directory.person_id, huge)
    error = only_error(
        post(client, ADD, body, directory.headers(uuid.uuid4().hex)), 422, "invalid_field"
    )
    assert len(error["detail"]) < 300 and "…" in error["detail"]
    (rejected,) = events(services, "RejectedCall.Recorded")
    assert len(services.app.mapper.to_domain_event(rejected).detail) < 300


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_a_line_separator_in_a_code_is_refused(client, directory, separator):
    body = set_code_body(directory.person_id, code=f"VC{separator}Partners")
    error = only_error(
        post(client, CODE, body, directory.headers(uuid.uuid4().hex)), 422, "invalid_field"
    )
    assert "control characters" in error["detail"]


def test_an_attribute_named_twice_is_refused_naming_it(client, directory, services):
    person, community, other = (
        directory.person_id,
        directory.community_id,
        directory.other_person_id,
    )
    raw = (
        '{"data": {"type": "communityMembership", "attributes": {'
        f'"personId": {person}, "communityId": {community}, "personId": {other}}}}}}}'
    ).encode()
    error = only_error(
        post(client, ADD, raw, directory.headers(uuid.uuid4().hex)), 422, "invalid_field"
    )
    assert error["source"] == {"pointer": "/data/attributes/personId"}
    assert "personId" in error["detail"] and "once" in error["detail"]
    hidden = raw.replace(f'"personId": {other}}}'.encode(), b'"person\\u0049d": 1}')
    only_error(post(client, ADD, hidden, directory.headers(uuid.uuid4().hex)), 422, "invalid_field")
    assert events(services, "Person.MemberAdded") == []
    same_text_in_a_value = set_code_body(directory.person_id, code='"personId"')
    assert (
        post(client, CODE, same_text_in_a_value, directory.headers(uuid.uuid4().hex)).status_code
        == 200
    )


def test_a_liquid_id_with_leading_zeros_gets_the_guides_detail(client, directory):
    raw = b'{"data": {"type": "communityMembership", "attributes": {"personId": 001001, "communityId": 42}}}'
    error = only_error(
        post(client, ADD, raw, directory.headers(uuid.uuid4().hex)), 422, "invalid_field"
    )
    assert "personId must be an integer" in error["detail"] and "1001" in error["detail"]
    assert error["source"] == {"pointer": "/data/attributes/personId"}


def test_one_answer_for_an_email_with_spaces_and_capitals_everywhere(client, config, directory):
    person, tag = new_id(), uuid.uuid4().hex[:8]
    csv_file = Path(tempfile.mkdtemp()) / "people.csv"
    csv_file.write_text(f'id,email\n{person}," Ada.{tag}@Example.COM "\n')
    imported = subprocess.run(
        [pm_ops(), "directory", "import", "--people", str(csv_file)],
        env={**os.environ, "OPS_DATABASE_URL": config.database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    body = set_code_body(code="Trimmed", email=f"  ada.{tag}@example.com  ")
    answer = post(client, CODE, body, directory.headers(uuid.uuid4().hex))
    assert answer.status_code == 200, answer.text
    assert answer.json["data"]["attributes"]["personId"] == person


def test_a_forged_forwarded_address_is_not_recorded(config, directory):
    from dataclasses import replace

    from falcon import testing

    from api.app import create_app

    services = directory.services
    services.config = replace(services.config, trusted_proxies=("127.0.0.0/8",))
    client = testing.TestClient(create_app(services))
    forged = "x" * 5000 + ", <script>"
    body = set_code_body(directory.person_id, code="Forwarded")
    headers = directory.headers(uuid.uuid4().hex) | {"X-Forwarded-For": forged}
    assert post(client, CODE, body, headers).status_code == 200
    (changed,) = events(services, "Person.SignupCodeChanged")
    assert services.app.mapper.to_domain_event(changed).meta["source_address"] == "127.0.0.1"
