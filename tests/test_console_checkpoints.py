"""The console's signed checkpoints (SPEC §9, §10), through the Falcon app on both stores:
the integrity page shows the latest checkpoint, its witnesses' lag and the verifier key;
each audit entry (and each audited event on a person's page) offers its inclusion proof,
which checks out with the standalone verifier the console also serves."""

import base64
import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from api.bootstrap import Services, build_services
from projections import catch_up_once
from projections.transparency import ProofError, check_inclusion
from tests.test_console_http import READ_MODELS, audit_token, positions, set_codes, sign_in

WITNESSED = (*READ_MODELS, "checkpoints", "witness-directory")


@pytest.fixture
def checkpoints_on() -> bool:
    return True  # a test parametrizes it False to see the console without a key


@pytest.fixture
def services(config, checkpoint_key, tmp_path, checkpoints_on) -> Iterator[Services]:
    """The conftest's services, signing checkpoints into a directory witness."""
    if checkpoints_on:
        notes = tmp_path / "notes"
        notes.mkdir()
        config = replace(config, checkpoint_key=checkpoint_key, checkpoint_dir=str(notes))
    built = build_services(config)
    yield built
    built.close()


def sign_checkpoint(services: Services, names: tuple[str, ...] = WITNESSED) -> None:
    """Run the projections once: the tree signs a checkpoint of the whole log when it has
    caught up, and the directory witness takes it."""
    catch_up_once(services.app, services.config, names)


def witness_note(services: Services) -> tuple[str, int, str]:
    """(origin, size, base64 root) of the latest note the directory witness holds."""
    notes = sorted(Path(services.config.checkpoint_dir).glob("*.note"), key=lambda p: int(p.stem))
    origin, size, root = notes[-1].read_text().split("\n")[:3]
    return origin, int(size), root


def verifier_key(key_path: str, name: str) -> str:
    """SPEC §10's verifier key, computed here from the private key file on its own."""
    private = load_pem_private_key(Path(key_path).read_bytes(), password=None)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    encoded = base64.b64encode(b"\x01" + public).decode()
    return f"{name}+{key_id.hex()}+{encoded}"


def witness_row(text: str, name: str) -> str:
    """The witness's row in the witnesses table ("alarm" in it when marked so)."""
    text = text.split('id="witnesses-table"', 1)[1].split("</table>", 1)[0]
    found = re.search(rf'<tr( class="alarm")?>\s*<th scope="row">{name}</th>(.*?)</tr>', text, re.S)
    assert found, f"no row for {name}"
    return (found.group(1) or "") + found.group(2)


def proof_links(text: str) -> list[int]:
    return [int(p) for p in re.findall(r'href="/console/proof\?position=(\d+)"', text)]


def test_integrity_shows_the_latest_checkpoint_its_witnesses_and_the_verifier_key(
    client, directory, services, checkpoint_key
):
    cookie = sign_in(client, audit_token(directory))
    set_codes(client, directory, 2)
    sign_checkpoint(services)
    origin, size, root = witness_note(services)
    page = client.simulate_get("/console/integrity", headers=cookie)
    assert page.status_code == 200
    assert f'id="checkpoint-size">{size} events<' in page.text
    assert f'id="checkpoint-root">{root}<' in page.text
    assert "checks with the verifier key below" in page.text
    assert f'id="verifier-key">{verifier_key(checkpoint_key, origin)}<' in page.text
    held = witness_row(page.text, "witness-directory")
    assert f'<td class="num">{size}</td>' in held and "holds the latest" in held
    assert "keeping up" in held and "alarm" not in held
    s3 = witness_row(page.text, "witness-s3")
    assert "off: set OPS_CHECKPOINT_S3" in s3
    assert 'href="/console/checkpoints/transparency.py"' in page.text

    # The log grows and a new checkpoint is signed; no witness runner takes it yet.
    set_codes(client, directory, 1)
    sign_checkpoint(services, ("checkpoints",))
    page = client.simulate_get("/console/integrity", headers=cookie)
    assert int(re.search(r'id="checkpoint-size">(\d+) events<', page.text).group(1)) > size
    behind = witness_row(page.text, "witness-directory")
    assert "1 checkpoint behind" in behind and "not running" in behind and "alarm" in behind
    sign_checkpoint(services, ("witness-directory",))
    page = client.simulate_get("/console/integrity", headers=cookie)
    assert "holds the latest" in witness_row(page.text, "witness-directory")


def test_a_checkpoint_edited_in_the_database_is_shown_not_to_check(client, directory, services):
    cookie = sign_in(client, audit_token(directory))
    sign_checkpoint(services)
    _, size, root = witness_note(services)
    forged = root[:-3] + ("A" if root[-3] != "A" else "B") + root[-2:]
    with services.app.recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(
            f"UPDATE {services.config.table('ops_checkpoints')} "
            f"SET note = REPLACE(note, '{root}', '{forged}')"
        )
    page = client.simulate_get("/console/integrity", headers=cookie)
    signature = page.text.split('id="checkpoint-signature">', 1)[1].split("</dd>", 1)[0]
    assert "does not check with the verifier key" in signature


def download_proof(client, cookie, position: int) -> dict:
    proof = client.simulate_get(
        "/console/proof", query_string=f"position={position}", headers=cookie
    )
    assert proof.status_code == 200, proof.text
    assert proof.headers["content-type"] == "application/json"
    assert proof.headers["content-disposition"].startswith("attachment")
    return orjson.loads(proof.content)


def test_each_audit_entry_offers_a_proof_that_the_standalone_verifier_accepts(
    client, directory, services, checkpoint_key, tmp_path
):
    cookie = sign_in(client, audit_token(directory))
    set_codes(client, directory, 3, workflow="Proven")
    sign_checkpoint(services)
    origin, size, _ = witness_note(services)
    key = verifier_key(checkpoint_key, origin)
    page = client.simulate_get("/console/audit", query_string="workflow=proven", headers=cookie)
    shown = positions(page.text)
    assert len(shown) == 3 and proof_links(page.text) == shown

    document = download_proof(client, cookie, shown[0])
    assert document["position"] == shown[0] and document["tree_size"] == size
    assert b'"VC-2"' in base64.b64decode(document["event"]["state"])  # the newest call's event
    assert "is in the tree of" in check_inclusion(document, key)

    # As an auditor does: the verifier downloaded from the console, run on its own.
    script = client.simulate_get("/console/checkpoints/transparency.py", headers=cookie)
    assert script.status_code == 200 and "attachment" in script.headers["content-disposition"]
    (tmp_path / "transparency.py").write_bytes(script.content)
    (tmp_path / "proof.json").write_bytes(orjson.dumps(document))
    checked = subprocess.run(
        [sys.executable, "-I", "transparency.py", "inclusion", "--key", key, "proof.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0 and checked.stdout.startswith("OK:"), checked.stderr

    # The same proof with the event's content changed does not check out.
    state = base64.b64decode(document["event"]["state"]).replace(b'"VC-2"', b'"VC-9"')
    document["event"]["state"] = base64.b64encode(state).decode()
    with pytest.raises(ProofError):
        check_inclusion(document, key)


def test_an_entry_not_yet_signed_says_so_instead_of_a_link(client, directory, services):
    cookie = sign_in(client, audit_token(directory))
    set_codes(client, directory, 1, workflow="Signed")
    sign_checkpoint(services)
    set_codes(client, directory, 2, workflow="Later")  # VC-0 again changes nothing; VC-1 does
    catch_up_once(services.app, services.config, READ_MODELS)  # the tree stays behind
    page = client.simulate_get("/console/audit", headers=cookie)
    later = re.search(r"<tr>((?:(?!</tr>).)*Later(?:(?!</tr>).)*)</tr>", page.text, re.S).group(1)
    (position,) = map(int, re.findall(r'<td class="num">(\d+)</td>', later))
    assert "not in a signed checkpoint yet" in later and position not in proof_links(page.text)
    signed = client.simulate_get("/console/audit", query_string="workflow=signed", headers=cookie)
    assert proof_links(signed.text) == positions(signed.text)

    refused = client.simulate_get(
        "/console/proof", query_string=f"position={position}", headers=cookie
    )
    assert refused.status_code == 404
    assert f"No inclusion proof for position {position}" in refused.text
    assert "is in the tree yet" in refused.text  # ProofUnavailable's words
    for query in ("position=abc", "position=", "position=5&size=x", ""):
        bad = client.simulate_get("/console/proof", query_string=query, headers=cookie)
        assert bad.status_code == 400 and "whole number" in bad.text, query


def test_signed_out_requests_for_proofs_and_the_verifier_are_sent_to_sign_in(
    client, directory, services
):
    sign_checkpoint(services)
    for path, query in (
        ("/console/proof", "position=1"),
        ("/console/checkpoints/transparency.py", ""),
    ):
        result = client.simulate_get(path, query_string=query)
        assert result.status_code == 303, path
        assert result.headers["location"].startswith("/console/sign-in?next=")
        assert b"tree_size" not in result.content and b"check_inclusion" not in result.content


def test_a_token_event_proof_leaves_out_the_event_and_still_checks(
    client, directory, services, checkpoint_key
):
    cookie = sign_in(client, audit_token(directory))
    sign_checkpoint(services)
    origin, _, _ = witness_note(services)
    page = client.simulate_get(
        "/console/audit", query_string="operation=issue-token", headers=cookie
    )
    issued = positions(page.text)
    assert issued and proof_links(page.text) == issued
    proof = client.simulate_get(
        "/console/proof", query_string=f"position={issued[0]}", headers=cookie
    )
    document = orjson.loads(proof.content)
    assert "event" not in document and "secret" in document["event_withheld"]
    assert b"secret_hash" not in proof.content and b"signing_key" not in proof.content
    assert "is in the tree of" in check_inclusion(document, verifier_key(checkpoint_key, origin))


def test_a_person_page_offers_the_proof_of_each_of_their_events(
    client, directory, services, checkpoint_key
):
    cookie = sign_in(client, audit_token(directory))
    set_codes(client, directory, 2, workflow="Person page")
    sign_checkpoint(services)
    origin, _, _ = witness_note(services)
    page = client.simulate_get(f"/console/people/{directory.person_id}", headers=cookie)
    assert page.status_code == 200
    rows = page.text.split('id="history-table"', 1)[1].split("</tbody>", 1)[0].split("<tr>")[2:]
    registered, *changes = rows
    assert "Registered" in registered and len(proof_links(registered)) == 1
    assert len(changes) == 2 and all("SignupCodeChanged" in row for row in changes)
    audited = client.simulate_get(
        "/console/audit", query_string=f"person={directory.person_id}", headers=cookie
    )
    assert proof_links(page.text) == sorted(proof_links(registered) + positions(audited.text))
    topics = []
    for position in proof_links(page.text):
        document = download_proof(client, cookie, position)
        topics.append(document["event"]["topic"].rsplit(".", 1)[1])
        check_inclusion(document, verifier_key(checkpoint_key, origin))
    assert topics == ["Registered", "SignupCodeChanged", "SignupCodeChanged"]


@pytest.mark.parametrize("checkpoints_on", [False])
def test_without_a_key_the_console_says_checkpoints_are_off(client, directory, checkpoints_on):
    cookie = sign_in(client, audit_token(directory))
    set_codes(client, directory, 1)
    catch_up_once(directory.services.app, directory.services.config, READ_MODELS)
    integrity = client.simulate_get("/console/integrity", headers=cookie)
    assert "Checkpoints are off: set OPS_CHECKPOINT_KEY" in integrity.text
    assert 'id="witnesses-table"' not in integrity.text
    audit = client.simulate_get("/console/audit", headers=cookie)
    assert "checkpoints are off" in audit.text and not proof_links(audit.text)
    refused = client.simulate_get("/console/proof", query_string="position=1", headers=cookie)
    assert refused.status_code == 404 and "no checkpoint has been signed yet" in refused.text


def test_a_key_file_gone_at_run_time_is_explained_not_crashed(
    client, directory, services, checkpoint_key
):
    cookie = sign_in(client, audit_token(directory))
    sign_checkpoint(services)
    Path(checkpoint_key).unlink()
    page = client.simulate_get("/console/integrity", headers=cookie)
    assert page.status_code == 200
    problem = page.text.split('id="verifier-key-problem">', 1)[1].split("</p>", 1)[0]
    assert "OPS_CHECKPOINT_KEY: cannot read" in problem
    assert "not checked: the verifier key is not available here" in page.text
    assert "Traceback" not in page.text
