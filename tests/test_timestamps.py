"""RFC 3161 time-stamps of a note, against a local fake Time-Stamp Authority."""

import datetime
import hashlib
import shutil
import subprocess
import uuid

import pytest

from projections.timestamps import TimestampError, load_roots, request_timestamp, verify_timestamp
from projections.witness_stores import DirectoryStore
from tests.fake_tsa import FakeTSA, make_authority
from tests.helpers import LEAKS
from tests.server import free_port


@pytest.fixture
def tsa():
    fake = FakeTSA().start()
    yield fake
    fake.stop()


def a_note() -> bytes:
    return f"ops.example/pm-ops\n{uuid.uuid4().int % 10**6}\n{uuid.uuid4().hex}=\n".encode()


def refused(call) -> str:
    with pytest.raises(TimestampError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and not any(leak in message for leak in LEAKS)
    return message


def test_a_token_verifies_against_the_authoritys_root_and_tells_the_time(tsa):
    note = a_note()
    token = request_timestamp(tsa.url, note)
    when = verify_timestamp(token, note, [tsa.authority.root])
    now = datetime.datetime.now(datetime.UTC)
    assert abs(now - when) < datetime.timedelta(minutes=5)


def test_the_request_is_for_sha256_of_the_note_with_a_nonce_and_certreq(tsa):
    note = a_note()
    request_timestamp(tsa.url, note)
    (sent,) = tsa.requests
    imprint = sent["message_imprint"]
    assert imprint["hash_algorithm"]["algorithm"].native == "sha256"
    assert imprint["hashed_message"].native == hashlib.sha256(note).digest()
    assert sent["cert_req"].native is True
    assert sent["nonce"].native is not None


def test_a_token_for_other_data_is_refused(tsa):
    token = request_timestamp(tsa.url, a_note())
    message = refused(lambda: verify_timestamp(token, a_note(), [tsa.authority.root]))
    assert message == "the time-stamp does not check out: it was issued for other data"


def test_a_token_checked_against_another_root_is_refused(tsa):
    note = a_note()
    token = request_timestamp(tsa.url, note)
    other = make_authority("Other TSA").root
    message = refused(lambda: verify_timestamp(token, note, [other]))
    assert message == (
        "the time-stamp does not check out: its signature does not chain to a trusted root"
    )
    assert verify_timestamp(token, note, [other, tsa.authority.root])


def test_something_that_is_not_a_token_or_no_roots_is_refused(tsa):
    note = a_note()
    assert refused(lambda: verify_timestamp(b"\x30\x03abc", note, [tsa.authority.root])) == (
        "the kept time-stamp is something that is not an RFC 3161 time-stamp"
    )
    token = request_timestamp(tsa.url, note)
    assert refused(lambda: verify_timestamp(token, note, [])) == (
        "no trusted time-stamp roots are configured (OPS_TSA_ROOTS)"
    )


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("500", "answered HTTP 500 Internal Server Error"),
        ("rejection", "did not grant a time-stamp (rejection: policy not accepted)"),
        ("wrong_nonce", "answered another request (the nonce differs)"),
        ("wrong_imprint", "time-stamped other data than the note"),
    ],
)
def test_an_authority_that_fails_or_answers_wrongly_is_a_timestamp_error(tsa, fault, said):
    tsa.faults.append(fault)
    message = refused(lambda: request_timestamp(tsa.url, a_note()))
    assert message == f"the time-stamp authority {tsa.url} {said}"


def test_an_authority_that_drops_the_connection_is_a_timestamp_error(tsa):
    tsa.faults.append("drop")
    message = refused(lambda: request_timestamp(tsa.url, a_note()))
    assert message.startswith(f"the time-stamp authority {tsa.url} could not be reached: ")


def test_an_authority_that_went_away_is_a_timestamp_error(tsa):
    url = tsa.url
    tsa.stop()
    message = refused(lambda: request_timestamp(url, a_note()))
    assert message == f"the time-stamp authority {url} could not be reached: Connection refused"
    closed = f"http://127.0.0.1:{free_port()}/"
    assert refused(lambda: request_timestamp(closed, a_note())).endswith("Connection refused")


def test_an_authority_url_must_be_http():
    assert refused(lambda: request_timestamp("file:///etc/passwd", a_note())) == (
        "the time-stamp authority URL 'file:///etc/passwd' is not http(s)"
    )


def test_roots_are_read_from_a_pem_bundle(tmp_path):
    first, second = make_authority("One"), make_authority("Two")
    bundle = tmp_path / "tsa-roots.pem"
    bundle.write_bytes(first.root_pem + second.root_pem)
    assert load_roots(str(bundle)) == [first.root, second.root]
    missing = tmp_path / "missing.pem"
    assert refused(lambda: load_roots(str(missing))) == (
        f"the time-stamp roots {missing} cannot be read: No such file or directory"
    )
    bundle.write_text("not a certificate")
    assert refused(lambda: load_roots(str(bundle))) == (
        f"the time-stamp roots {bundle} are not PEM certificates"
    )


def test_a_token_kept_beside_its_note_verifies_from_the_store(tsa, tmp_path):
    store = DirectoryStore(tmp_path)
    note = a_note()
    store.put(42, note)
    store.put_extra(42, "tsr.0", request_timestamp(tsa.url, note))
    roots = tmp_path.parent / f"{uuid.uuid4().hex}.pem"
    roots.write_bytes(tsa.authority.root_pem)
    kept = store.get_extra(42, "tsr.0")
    assert kept is not None
    assert verify_timestamp(kept, store.get(42) or b"", load_roots(str(roots)))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_openssl_verifies_a_kept_token_as_an_auditor_would(tsa, tmp_path):
    note = a_note()
    (tmp_path / "7.note").write_bytes(note)
    (tmp_path / "7.tsr.0").write_bytes(request_timestamp(tsa.url, note))
    (tmp_path / "roots.pem").write_bytes(tsa.authority.root_pem)
    checked = subprocess.run(
        ["openssl", "ts", "-verify", "-in", "7.tsr.0", "-data", "7.note", "-CAfile", "roots.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "Verification: OK" in checked.stdout
