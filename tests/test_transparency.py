"""The standalone verifier (projections/transparency.py): RFC 6962 proofs checked, C2SP
checkpoints and signed notes written and opened as Go's golang.org/x/mod/sumdb/note does,
every malformed input refused in a sentence, and the auditors' command line run as they
run it: one copied file, the system Python, isolated from pm-ops."""

import ast
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from projections import transparency
from projections.chain import content_hash
from projections.transparency import (
    Checkpoint,
    NoteError,
    ProofError,
    checkpoint_text,
    event_leaf,
    leaf_hash,
    main,
    node_hash,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key,
    verify_consistency,
    verify_inclusion,
    verify_note,
)
from tests.conftest import IN_CI
from tests.rfc6962_vectors import RFC_CONSISTENCY, RFC_INCLUSION, RFC_LEAVES, RFC_NODES, RFC_ROOTS
from tests.signed_log import SignedLog

SCRIPT = Path(transparency.__file__)

# The signed-note example published with Go's golang.org/x/mod/sumdb/note (package
# documentation and note_test.go): a key, its verifier key, and a note it signed.
PETER_SECRET = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_KEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
    "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01o"
    "OTGwnWLox33WWd1RvMc+QQ=\n"
).encode()


def random_origin() -> str:
    return f"log-{uuid.uuid4().hex[:10]}.example.org/pm-ops"


def signed_checkpoint(key: Ed25519PrivateKey, origin: str, size: int = 0) -> bytes:
    size = size or random.randint(1, 10**9)
    return sign_note(checkpoint_text(origin, size, os.urandom(32)), origin, key)


# --- RFC 6962 proofs --------------------------------------------------------------------


def test_leaf_and_node_hashes_are_rfc_6962s() -> None:
    assert [leaf_hash(leaf).hex() for leaf in RFC_LEAVES] == [RFC_NODES[(0, i)] for i in range(8)]
    left, right = bytes.fromhex(RFC_NODES[(1, 0)]), bytes.fromhex(RFC_NODES[(1, 1)])
    assert node_hash(left, right).hex() == RFC_NODES[(2, 0)]


@pytest.mark.parametrize(("index", "size"), sorted(RFC_INCLUSION))
def test_an_altered_inclusion_proof_is_refused(index: int, size: int) -> None:
    proof = [bytes.fromhex(h) for h in RFC_INCLUSION[(index, size)]]
    root, leaf = bytes.fromhex(RFC_ROOTS[size]), RFC_LEAVES[index]
    verify_inclusion(index, size, leaf, proof, root)
    for at in range(len(proof)):
        altered = list(proof)
        altered[at] = bytes([altered[at][0] ^ 1]) + altered[at][1:]
        with pytest.raises(ProofError, match="does not lead to the signed root"):
            verify_inclusion(index, size, leaf, altered, root)
    with pytest.raises(ProofError, match="does not lead to the signed root"):
        verify_inclusion(index, size, leaf + b"!", proof, root)
    with pytest.raises(ProofError, match=f"has {len(proof) + 1} hashes, but index {index} of"):
        verify_inclusion(index, size, leaf, [*proof, root], root)
    with pytest.raises(ProofError, match=f"index {size} is outside a tree of {size} entr"):
        verify_inclusion(size, size, leaf, proof, root)


def test_inclusion_proofs_with_a_wrong_index_or_short_hash_are_refused() -> None:
    proof = [bytes.fromhex(h) for h in RFC_INCLUSION[(5, 8)]]
    root = bytes.fromhex(RFC_ROOTS[8])
    with pytest.raises(ProofError, match="the entry at index 4 is not in that tree of 8 entries"):
        verify_inclusion(4, 8, RFC_LEAVES[5], proof, root)
    with pytest.raises(ProofError, match="has 3 hashes, but index 5 of 6 entries needs exactly 2"):
        verify_inclusion(5, 6, RFC_LEAVES[5], proof, root)
    with pytest.raises(ProofError, match="hash 2 of the inclusion proof is not a 32-byte hash"):
        verify_inclusion(5, 8, RFC_LEAVES[5], [proof[0], proof[1][:31], proof[2]], root)


@pytest.mark.parametrize(("old", "new"), sorted(RFC_CONSISTENCY))
def test_an_altered_consistency_proof_is_refused(old: int, new: int) -> None:
    proof = [bytes.fromhex(h) for h in RFC_CONSISTENCY[(old, new)]]
    old_root, new_root = bytes.fromhex(RFC_ROOTS[old]), bytes.fromhex(RFC_ROOTS[new])
    verify_consistency(old, new, old_root, new_root, proof)
    for at in range(len(proof)):
        altered = list(proof)
        altered[at] = altered[at][:-1] + bytes([altered[at][-1] ^ 0x80])
        with pytest.raises(ProofError, match="does not (rebuild|lead to)"):
            verify_consistency(old, new, old_root, new_root, altered)
    other = bytes.fromhex(RFC_ROOTS[new - 1])
    with pytest.raises(ProofError, match="(does not lead to the newer root|roots differ)"):
        verify_consistency(old, new, old_root, other, proof)
    with pytest.raises(ProofError, match=f"has {len(proof) + 1} hashes, but linking {old} entr"):
        verify_consistency(old, new, old_root, new_root, [*proof, old_root])


def test_impossible_consistency_claims_are_refused() -> None:
    roots = [bytes.fromhex(h) for h in RFC_ROOTS]
    with pytest.raises(ProofError, match="a tree of 5 entries cannot be the start of one of 4"):
        verify_consistency(5, 4, roots[5], roots[4], [])
    with pytest.raises(ProofError, match="does not rebuild the older root"):
        proof = [bytes.fromhex(h) for h in RFC_CONSISTENCY[(6, 8)]]
        verify_consistency(6, 8, roots[5], roots[8], proof)
    verify_consistency(0, 8, roots[0], roots[8], [])
    with pytest.raises(ProofError, match="roots differ"):
        verify_consistency(0, 8, roots[1], roots[8], [])
    with pytest.raises(ProofError, match="roots differ"):
        verify_consistency(3, 3, roots[3], roots[4], [])


# --- Checkpoints ------------------------------------------------------------------------


def test_a_checkpoint_reads_back_and_its_extension_lines_are_ignored() -> None:
    origin, size, root = random_origin(), random.randint(0, 2**63 - 1), os.urandom(32)
    text = checkpoint_text(origin, size, root)
    assert text == f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()
    assert parse_checkpoint(text) == Checkpoint(origin, size, root)
    assert parse_checkpoint(text + b"extension one\n\xe2\x80\x94 two\n") == (origin, size, root)


ROOT64 = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"o\n12\n{ROOT64}", "does not end with a newline"),
        ("o\n12\n", "needs three lines, its origin, tree size and root; it has 2"),
        (f"\n12\n{ROOT64}\n", "its origin, is empty"),
        (f"o\n012\n{ROOT64}\n", "tree size '012' is not a whole number"),
        (f"o\n-1\n{ROOT64}\n", "tree size '-1'"),
        (f"o\n+1\n{ROOT64}\n", "tree size '\\+1'"),
        (f"o\n 1\n{ROOT64}\n", "tree size ' 1'"),
        (f"o\n\u0661\n{ROOT64}\n", "is not a whole number"),
        (f"o\n9223372036854775808\n{ROOT64}\n", "is not a whole number"),
        ("o\n1\nAAAA\n", "root 'AAAA' is not a base64 SHA-256 hash"),
        (f"o\n1\n{ROOT64[:-1]}\n", "is not a base64 SHA-256 hash"),
        (f"o\n1\n{ROOT64}=\n", "is not a base64 SHA-256 hash"),
        (f"o\n1\n{ROOT64}\n\nmore\n", "an empty line after its root"),
        (b"o\n1\n\xff\n", "not valid UTF-8"),
    ],
)
def test_a_malformed_checkpoint_is_refused_in_words(text: str | bytes, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        parse_checkpoint(text.encode() if isinstance(text, str) else text)


def test_a_checkpoint_is_only_written_for_a_usable_origin_and_root() -> None:
    with pytest.raises(NoteError, match="not usable"):
        checkpoint_text("two words", 1, os.urandom(32))
    with pytest.raises(NoteError, match="32-byte root"):
        checkpoint_text(random_origin(), 1, os.urandom(31))


# --- Signed notes -----------------------------------------------------------------------


def test_gos_published_note_is_reproduced_and_opened() -> None:
    seed = base64.b64decode(PETER_SECRET.split("+", 4)[4])[1:]
    key = Ed25519PrivateKey.from_private_bytes(seed)
    assert verifier_key("PeterNeumann", key.public_key()) == PETER_KEY
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_TEXT + b"\n" + PETER_SIG
    assert verify_note(GO_TEXT + b"\n" + PETER_SIG + ENOCH_SIG, PETER_KEY) == GO_TEXT
    assert verify_note(GO_TEXT + b"\n" + PETER_SIG + ENOCH_SIG, ENOCH_KEY) == GO_TEXT
    # Go's note_test.go: repeated signatures are ignored, a damaged repeat of another key's too.
    damaged_enoch = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    repeats = PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + damaged_enoch
    assert verify_note(GO_TEXT + b"\n" + repeats, PETER_KEY) == GO_TEXT


@pytest.mark.parametrize(
    ("note", "reason"),
    [  # Go's note_test.go "invalid encoded message syntax", and its altered signature
        (GO_TEXT, "no blank line between its text and its signatures"),
        (GO_TEXT + b"\n", "no signature after its blank line"),
        (GO_TEXT + b"\n" + PETER_SIG[:-1], "does not end: the note is truncated"),
        (b"\x01" + GO_TEXT + b"\n" + PETER_SIG, "control character \\(0x01\\)"),
        (b"\xff" + GO_TEXT + b"\n" + PETER_SIG, "not valid UTF-8 \\(byte 0\\)"),
        (GO_TEXT + b"\n" + b"\xe2\x80\x94 Bad Name x08go=\n", "line 1's signature is not base64"),
        (GO_TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n", "line 2 does not start with an em"),
        (GO_TEXT + b"\n" + PETER_SIG * 101, "has 101 signatures, more than 100"),
        (GO_TEXT + b"\n" + PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:], "does not match the note"),
    ],
)
def test_gos_malformed_notes_are_refused_in_words(note: bytes, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        verify_note(note, PETER_KEY)


def test_gos_mangled_verifier_keys_are_refused() -> None:
    """Go's TestNewVerifier: every part of the key, and every byte of it changed, is refused."""
    assert parse_verifier_key(PETER_KEY).key_id == 0xC74F20A3
    mangled = {
        PETER_KEY[i:j] for i in range(len(PETER_KEY)) for j in range(i + 1, 1 + len(PETER_KEY))
    }
    mangled.discard(PETER_KEY)
    for at in range(len(PETER_KEY)):
        mangled.add(PETER_KEY[:at] + chr(ord(PETER_KEY[at]) + 1) + PETER_KEY[at + 1 :])
    for text in mangled:
        with pytest.raises(NoteError):
            parse_verifier_key(text)
    longer = "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
    with pytest.raises(NoteError, match="Ed25519 key is 36 bytes, not 32"):
        parse_verifier_key(longer)
    with pytest.raises(NoteError, match="algorithm 101; only Ed25519"):
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("PeterNeumann", "three parts, NAME\\+KEYID\\+KEY"),
        ("PeterNeumann+c74f20a3", "three parts"),
        (
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "name '' has spaces or is empty",
        ),
        ("Peter Neumann+c74f20a3+ARpc", "name 'Peter Neumann'"),
        ("PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "not 8 hexadecimal"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not base64"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "it was altered"),
    ],
)
def test_a_malformed_verifier_key_is_refused_in_words(text: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        parse_verifier_key(text)


def test_a_checkpoint_signed_and_cosigned_opens_with_either_key() -> None:
    key, witness, origin = (
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
        random_origin(),
    )
    text = checkpoint_text(origin, 4567, os.urandom(32))
    note = sign_note(text, origin, key)
    assert note.startswith(text + b"\n\xe2\x80\x94 " + origin.encode() + b" ")
    assert open_note(note, verifier_key(origin, key.public_key())) == parse_checkpoint(text)
    cosigned = note + sign_note(text, "witness.example", witness)[len(text) + 1 :]
    assert open_note(cosigned, verifier_key(origin, key.public_key())).size == 4567
    assert verify_note(cosigned, verifier_key("witness.example", witness.public_key())) == text


def note_cases(key: Ed25519PrivateKey, origin: str) -> list[tuple[str, bytes, str]]:
    note = signed_checkpoint(key, origin)
    text, signature = note.split(b"\n\n")
    other = Ed25519PrivateKey.generate()
    altered_root = text[:-3] + (b"B" if text[-3:-2] == b"A" else b"A") + text[-2:]
    return [
        ("bad UTF-8", note.replace(b"\n", b"\n\xc3\x28", 1), "note is not valid UTF-8"),
        ("control", note.replace(b"\n", b"\r\n", 1), "control character \\(0x0d\\)"),
        ("no blank line", note.replace(b"\n\n", b"\n"), "no blank line"),
        ("another key", signed_checkpoint(other, origin), "signed by a key named .* but not by"),
        ("another log", signed_checkpoint(other, "elsewhere"), "no signature by .*by elsewhere$"),
        ("tampered text", altered_root + b"\n\n" + signature, "does not match the note"),
        ("tampered size", note.replace(b"\n", b"\n1", 1), "does not match the note"),
        ("tampered sig", note[:-12] + note[-12:].swapcase(), "does not match the note"),
        ("bad base64", note[:-3] + b"!=\n", "signature is not base64"),
        ("unpadded", note[:-2] + b"\n", "signature is not base64"),
        ("short sig", text + "\n\n\u2014 x AAAAAA==\n".encode(), "signature is too short"),
        ("no em dash", text + b"\n\n- " + signature[4:], "does not start with an em dash"),
        ("truncated", note[:-1], "truncated"),
        ("cut in the text", note[: len(text) // 2], "no blank line"),
        ("cut mid-line", note[:-20], "truncated"),
        ("not a checkpoint", sign_note(b"hello\n", origin, key), "needs three lines, .*; it has 1"),
    ]


def test_each_malformed_note_is_refused_in_its_own_words() -> None:
    key, origin = Ed25519PrivateKey.generate(), random_origin()
    vkey = verifier_key(origin, key.public_key())
    for case, note, reason in note_cases(key, origin):
        with pytest.raises(NoteError, match=reason):
            open_note(note, vkey)
            pytest.fail(f"{case} was accepted")


def test_the_key_must_be_named_as_the_log_unless_another_origin_is_expected() -> None:
    key, origin = Ed25519PrivateKey.generate(), random_origin()
    note = sign_note(checkpoint_text("other.example/log", 9, os.urandom(32)), origin, key)
    vkey = verifier_key(origin, key.public_key())
    with pytest.raises(
        NoteError, match=f"for the log other.example/log, but the key is named {origin}"
    ):
        open_note(note, vkey)
    assert open_note(note, vkey, origin="other.example/log").size == 9
    with pytest.raises(NoteError, match="but third was expected"):
        open_note(note, vkey, origin="third")
    renamed = verifier_key("renamed.example", key.public_key())
    with pytest.raises(NoteError, match="no signature by renamed.example"):
        open_note(note, renamed)


def test_only_well_formed_text_is_signed() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(NoteError, match="must end with a newline"):
        sign_note(b"no newline", "name", key)
    with pytest.raises(NoteError, match="control character"):
        sign_note(b"tab\there\n", "name", key)
    with pytest.raises(NoteError, match="not a valid key name"):
        sign_note(b"text\n", "a+b", key)
    with pytest.raises(NoteError, match="must be bytes"):
        open_note("a string", verifier_key("name", key.public_key()))  # type: ignore[arg-type]


def test_a_key_made_by_openssl_signs_checkpoints(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        message = "openssl is not installed (apt-get install openssl)"
        if IN_CI:
            pytest.fail(f"{message}; in CI the key format must be checked")
        pytest.skip(message)
    pem = tmp_path / "checkpoint.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem)], check=True)
    assert pem.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    key = load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    origin = random_origin()
    note = signed_checkpoint(key, origin, size=77)
    assert open_note(note, verifier_key(origin, key.public_key())).size == 77


def test_an_events_leaf_is_the_hash_chains_content_hash() -> None:
    stored = SimpleNamespace(
        id=random.randint(1, 10**9),
        originator_id=uuid.uuid4(),
        originator_version=random.randint(1, 100),
        topic="aggregates.person:Person.MemberAdded",
        state=os.urandom(80),
    )
    leaf = event_leaf(
        stored.id, str(stored.originator_id), stored.originator_version, stored.topic, stored.state
    )
    assert leaf == bytes.fromhex(content_hash(stored))


def test_the_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    allowed = set(sys.stdlib_module_names) | {"cryptography", "__future__"}
    imported = set()
    for node in ast.walk(ast.parse(SCRIPT.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import would need pm-ops"
            imported.add(node.module.split(".")[0])
    assert imported <= allowed, imported - allowed


# --- The auditors' command line -------------------------------------------------------------


def system_python() -> str:
    """A Python outside pm-ops's virtualenv that has cryptography, as an auditor's has."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).parent != Path(sys.executable).parent:
            probe = subprocess.run([candidate, "-I", "-c", "import cryptography"], check=False)
            if probe.returncode == 0:
                return candidate
    message = (
        "no system python3 with the cryptography package (apt-get install python3-cryptography)"
    )
    if IN_CI:
        pytest.fail(f"{message}; in CI the standalone verifier must be run")
    pytest.skip(message)


@pytest.fixture
def auditor(tmp_path: Path):
    """Runs the verifier as an auditor does: the one file copied elsewhere, the system Python
    isolated (-I) from the environment, the working directory and pm-ops."""
    python = system_python()
    script = tmp_path / "transparency.py"
    shutil.copy(SCRIPT, script)

    def run(*args: str, document: object = None, stdin: str | None = None):
        if document is not None:
            path = tmp_path / f"proof-{uuid.uuid4().hex[:6]}.json"
            path.write_text(document if isinstance(document, str) else json.dumps(document))
            args = (*args, str(path))
        result = subprocess.run(
            [python, "-I", str(script), *args],
            capture_output=True,
            text=True,
            input=stdin,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def test_an_auditor_checks_an_inclusion_proof(auditor) -> None:
    log = SignedLog(random.randint(5, 60))
    size = random.randint(3, len(log.events))
    index = random.randrange(size)
    position = log.events[index]["position"]
    result = auditor("inclusion", "--key", log.verifier, document=log.inclusion(index, size))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"OK: entry at log position {position} (index {index}) is in the tree of {size} "
        f"entries signed by {log.origin}\n"
    )
    document = log.inclusion(index, size, with_event=True)
    result = auditor("inclusion", "--key", log.verifier, "-", stdin=json.dumps(document))
    assert result.returncode == 0
    assert result.stdout.endswith("; the event shown hashes to that entry\n")


def test_an_auditor_is_told_why_an_inclusion_proof_fails(auditor) -> None:
    log, other = SignedLog(12), SignedLog(3)
    document = log.inclusion(5, 12, with_event=True)
    cases = [
        (
            {**document, "proof": [document["proof"][0][::-1], *document["proof"][1:]]},
            "does not lead",
        ),
        (
            {**document, "event": {**document["event"], "topic": "x"}},
            "the event's content does not",
        ),
        ({**document, "checkpoint": other.checkpoint(3)}, f"no signature by {log.origin}"),
        ({**document, "tree_size": 11}, "the proof is for 11 entries; the checkpoint signs 12"),
        ("{not json", "the proof file is not valid JSON"),
        ({**document, "index": "5"}, '"index" in the proof file must be a whole number'),
    ]
    for bad, reason in cases:
        result = auditor("inclusion", "--key", log.verifier, document=bad)
        assert result.returncode == 1, (reason, result)
        assert result.stderr.startswith("FAILED: ") and reason in result.stderr
        assert result.stdout == ""


def test_an_auditor_checks_a_consistency_proof(auditor) -> None:
    log = SignedLog(random.randint(10, 60))
    new = random.randint(2, len(log.events))
    old = random.randint(1, new - 1)
    result = auditor("consistency", "--key", log.verifier, document=log.consistency(old, new))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"OK: the tree of {new} entries signed by {log.origin} contains its tree of "
        f"{old} entr{'y' if old == 1 else 'ies'} unchanged\n"
    )
    forked = SignedLog(new, key=log.key, origin=log.origin)  # the same log, another history
    document = {**log.consistency(old, new), "to_checkpoint": forked.checkpoint(new)}
    result = auditor("consistency", "--key", log.verifier, document=document)
    assert result.returncode == 1
    assert result.stderr.startswith("FAILED: the consistency proof does not ")


def test_an_auditor_can_insist_on_another_origin(auditor) -> None:
    log = SignedLog(4)
    document = log.inclusion(1, 4)
    text = checkpoint_text("mirror.example/pm-ops", 4, bytes(32))
    document["checkpoint"] = sign_note(text, log.origin, log.key).decode()
    result = auditor("inclusion", "--key", log.verifier, document=document)
    assert result.returncode == 1
    assert "is for the log mirror.example/pm-ops, but the key is named" in result.stderr
    result = auditor(
        "inclusion", "--key", log.verifier, "--origin", "mirror.example/pm-ops", document=document
    )
    assert result.returncode == 1  # the origin is accepted; the root (all zeros) is not
    assert "does not lead to the signed root" in result.stderr


def test_a_mistaken_command_exits_2_with_the_reason(auditor, tmp_path: Path) -> None:
    log = SignedLog(2)
    result = auditor()
    assert result.returncode == 2 and "usage:" in result.stderr
    result = auditor("inclusion", "--key", log.verifier, str(tmp_path / "missing.json"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "No such file or directory" in result.stderr
    result = auditor("inclusion", "--key", "not-a-key", document=log.inclusion(0, 2))
    assert result.returncode == 2
    assert "--key: a verifier key has three parts" in result.stderr


def malformed_documents(log: SignedLog) -> list[tuple[str, object, str]]:
    good = log.inclusion(2, 6, with_event=True)
    event = good["event"]
    forward = log.consistency(2, 5)
    backward = {
        **forward,
        "from": 5,
        "to": 2,
        "from_checkpoint": forward["to_checkpoint"],
        "to_checkpoint": forward["from_checkpoint"],
    }
    return [
        ("inclusion", [], "the proof file must hold a JSON object"),
        ("inclusion", "[" * 100000, "the proof file is not valid JSON"),
        ("inclusion", b'{"a": "\xff"}', "the proof file is not valid JSON"),
        ("inclusion", {k: v for k, v in good.items() if k != "leaf"}, 'has no "leaf"'),
        ("inclusion", {**good, "index": True}, '"index" in the proof file must be a whole'),
        (
            "inclusion",
            {**good, "index": -1},
            '"index" in the proof file must be a whole number from 0',
        ),
        ("inclusion", {**good, "index": 6}, "index 6 is outside a tree of 6 entries"),
        ("inclusion", {**good, "tree_size": 0}, "must be a whole number from 1"),
        ("inclusion", {**good, "tree_size": 2**64}, "must be a whole number from 1"),
        ("inclusion", {**good, "leaf": "ab" * 31}, '"leaf" must be a SHA-256 hash'),
        ("inclusion", {**good, "leaf": " " + good["leaf"][1:]}, '"leaf" must be a SHA-256 hash'),
        ("inclusion", {**good, "proof": "ab"}, '"proof" in the proof file must be a list'),
        ("inclusion", {**good, "proof": [None]}, '"proof item 1" must be a SHA-256 hash'),
        ("inclusion", {**good, "checkpoint": 5}, '"checkpoint" in the proof file must be the'),
        (
            "inclusion",
            {**good, "checkpoint": "\ud800"},
            '"checkpoint": the note is not valid UTF-8',
        ),
        ("inclusion", {**good, "event": []}, '"event" in the proof file must be an object'),
        ("inclusion", {**good, "event": {**event, "topic": 3}}, '"topic" in the event must be'),
        ("inclusion", {**good, "event": {**event, "state": "%%%"}}, '"state" in the event is not'),
        (
            "inclusion",
            {**good, "event": {**event, "position": 1}},
            "the event is at log position 1",
        ),
        (
            "inclusion",
            {k: v for k, v in good.items() if k != "event"} | {"event": {}},
            'the event has no "position"',
        ),
        ("consistency", {**forward, "from": 5, "to": 2}, '"from" is 5 but its checkpoint signs 2'),
        ("consistency", backward, "a tree of 5 entries cannot be the start of one of 2"),
        (
            "consistency",
            {**forward, "from": 0},
            '"from" in the proof file must be a whole number from 1',
        ),
        ("consistency", {**forward, "proof": []}, "has 0 hashes, but linking 2 entries to 5"),
    ]


def test_every_malformed_document_gets_a_sentence(tmp_path: Path, capsys) -> None:
    log = SignedLog(6)
    for command, document, reason in malformed_documents(log):
        path = tmp_path / "proof.json"
        if isinstance(document, bytes):
            path.write_bytes(document)
        else:
            path.write_text(document if isinstance(document, str) else json.dumps(document))
        assert main([command, "--key", log.verifier, str(path)]) == 1, reason
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("FAILED: ") and reason in err, (reason, err)
