"""Checks pm-ops's signed checkpoints and Merkle proofs with no pm-ops and no database.

Auditors: copy this one file anywhere and run it with Python 3.8 or later and the
`cryptography` package (`pip install cryptography`), nothing else:

    python3 transparency.py inclusion --key 'VERIFIER KEY' proof.json
    python3 transparency.py consistency --key 'VERIFIER KEY' proof.json

The verifier key is the last line `pm-ops checkpoints key` prints; proof.json is what
`pm-ops checkpoints prove --position P` (or `pm-ops checkpoints consistency --from N --to M`)
printed ("-" reads it from standard input). The script prints one line starting "OK:" and
exits 0 when the proof holds; otherwise "FAILED: <reason>" on standard error and exit 1, or
exit 2 when the command itself is wrong (an unreadable file, a malformed key).

Everything here is a public standard, so other tools check the same bytes: RFC 6962 /
RFC 9162 Merkle trees, C2SP tlog-checkpoint text, and C2SP signed notes (Go's
golang.org/x/mod/sumdb/note) with Ed25519 keys. pm-ops imports its verification from this
file too, so each check is written once.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962 §2.1: the hash of the empty tree
MAX_TREE_SIZE = 2**63 - 1  # what Go's tlog (int64) can read
MAX_SIGNATURES = 100  # as Go's note.Open: a note with more is malformed
ED25519 = 1  # the signed-note algorithm byte for Ed25519 keys
SIGNATURE_PREFIX = "\u2014 ".encode()  # an em dash and a space open each signature line
# Unicode's White_Space characters, which Go's unicode.IsSpace (and so a key name) excludes.
WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)
BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
DIGEST_HEX = re.compile(r"[0-9a-fA-F]{64}")


class ProofError(ValueError):
    """A Merkle proof that does not hold, with the reason in a sentence."""


class NoteError(ValueError):
    """A signed note, checkpoint or verifier key that is malformed or not signed as it must be."""


# --- RFC 6962 hashing and proofs --------------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 §2.1: the hash of one leaf, SHA-256(0x00 ‖ leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1: the hash of an interior node, SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _proof_sides(fn: int, sn: int) -> list[bool]:
    """RFC 9162's verification loop (§2.1.3.2 step 4, §2.1.4.2 step 6) run on the positions
    alone: for each proof hash in turn, whether it is the left sibling. Its length is the
    number of hashes a valid proof has."""
    sides = []
    while sn:
        left = bool(fn & 1) or fn == sn
        sides.append(left)
        if left:
            while fn and not fn & 1:  # a last node with no right sibling moves up unhashed
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
    return sides


def _check_hashes(proof: list[bytes], what: str, needed: int, context: str) -> None:
    if len(proof) != needed:
        raise ProofError(
            f"the {what} proof has {len(proof)} hashes, but {context} needs exactly {needed}"
        )
    for number, item in enumerate(proof, 1):
        if not isinstance(item, bytes) or len(item) != HASH_SIZE:
            raise ProofError(f"hash {number} of the {what} proof is not a {HASH_SIZE}-byte hash")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """The root a tree of `size` leaves must have if `leaf` (the leaf's data, hashed here)
    is at `index` with this audit path (RFC 9162 §2.1.3.2)."""
    if size < 1 or not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of {_entries(size)}")
    sides = _proof_sides(index, size - 1)
    _check_hashes(proof, "inclusion", len(sides), f"index {index} of {_entries(size)}")
    root = leaf_hash(leaf)
    for step, left in enumerate(sides):  # not zip(strict=): auditors may run Python < 3.10
        root = node_hash(proof[step], root) if left else node_hash(root, proof[step])
    return root


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:
    """Raises ProofError unless `proof` shows `leaf` at `index` in the tree of `size` leaves
    whose root is `root`."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(
            f"the inclusion proof does not lead to the signed root: the entry at index {index} "
            f"is not in that tree of {_entries(size)}, or the leaf or proof was altered"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> None:
    """Raises ProofError unless `proof` shows the tree of `old_size` leaves with `old_root`
    is the start of the tree of `new_size` leaves with `new_root` (RFC 9162 §2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(
            f"a tree of {_entries(old_size)} cannot be the start of one of {_entries(new_size)}"
        )
    context = f"linking {_entries(old_size)} to {_entries(new_size)}"
    if old_size in (0, new_size):  # nothing to prove beyond the roots themselves
        _check_hashes(proof, "consistency", 0, context)
        expected = EMPTY_ROOT if old_size == 0 else new_root
        if old_root != expected:
            raise ProofError("the two roots differ although the trees should be the same")
        return
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    sides = _proof_sides(fn, sn)
    whole = (old_size & (old_size - 1)) == 0  # the old tree is one node: its root starts the path
    _check_hashes(proof, "consistency", len(sides) + (0 if whole else 1), context)
    path = [old_root, *proof] if whole else list(proof)
    old, new = path[0], path[0]
    for step, left in enumerate(sides):
        sibling = path[step + 1]
        if left:
            old, new = node_hash(sibling, old), node_hash(sibling, new)
        else:
            new = node_hash(new, sibling)
    if old != old_root:
        raise ProofError("the consistency proof does not rebuild the older root")
    if new != new_root:
        raise ProofError(
            "the consistency proof does not lead to the newer root: the newer tree does not "
            "contain the older one unchanged"
        )


# --- C2SP tlog-checkpoint -----------------------------------------------------------------


class Checkpoint(NamedTuple):
    """What a checkpoint commits to: the log's name, its size, and the root of its tree."""

    origin: str
    size: int
    root: bytes


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64 (padded, nothing outside the alphabet), or None."""
    return base64.b64decode(text) if BASE64.fullmatch(text) else None


def _valid_name(name: str) -> bool:
    """Go's note rule for key names: non-empty, no white space, no '+'."""
    return bool(name) and "+" not in name and not WHITE_SPACE.intersection(name)


def checkpoint_text(origin: str, size: int, root: bytes) -> bytes:
    """The C2SP tlog-checkpoint body `<origin>\\n<size>\\n<base64 root>\\n`."""
    if not _valid_name(origin):
        raise NoteError(f"the origin {origin!r} is not usable: it names the signing key")
    if not 0 <= size <= MAX_TREE_SIZE or len(root) != HASH_SIZE:
        raise NoteError("a checkpoint needs a tree size and a 32-byte root hash")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def parse_checkpoint(text: bytes) -> Checkpoint:
    """The origin, size and root of a checkpoint body; extension lines are ignored."""
    try:
        body = text.decode()
    except UnicodeDecodeError:
        raise NoteError("the checkpoint is not valid UTF-8 text") from None
    if not body.endswith("\n"):
        raise NoteError("the checkpoint does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError(
            f"the checkpoint needs three lines, its origin, tree size and root; it has {len(lines)}"
        )
    origin, size, root = lines[:3]
    if not origin:
        raise NoteError("the checkpoint's first line, its origin, is empty")
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size) or int(size) > MAX_TREE_SIZE:
        raise NoteError(f"the checkpoint's tree size {size!r} is not a whole number")
    digest = _b64decode(root)
    if digest is None or len(digest) != HASH_SIZE:
        raise NoteError(f"the checkpoint's root {root!r} is not a base64 SHA-256 hash")
    if "" in lines[3:]:
        raise NoteError("the checkpoint has an empty line after its root")
    return Checkpoint(origin, int(size), digest)


# --- C2SP signed notes (golang.org/x/mod/sumdb/note), Ed25519 -------------------------------


class VerifierKey(NamedTuple):
    """A parsed verifier key: whose it is, its note key id, and its public key."""

    name: str
    key_id: int
    public_key: bytes  # the 32 raw bytes of an Ed25519 public key


def _key_hash(name: str, key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


def key_id(name: str, public_key: bytes) -> int:
    """The note key id: the first 4 bytes, big-endian, of SHA-256(name ‖ \\n ‖ 0x01 ‖ key)."""
    return _key_hash(name, bytes([ED25519]) + public_key)


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key `<name>+<key id, 8 hex>+<base64(0x01 ‖ public key)>`."""
    if not _valid_name(name):
        raise NoteError(f"{name!r} is not a valid key name: no spaces or '+', not empty")
    raw = _raw(public_key)
    encoded = base64.b64encode(bytes([ED25519]) + raw).decode()
    return f"{name}+{key_id(name, raw):08x}+{encoded}"


def parse_verifier_key(text: str) -> VerifierKey:
    """The name, key id and public key of a verifier key, checked as Go's note.NewVerifier."""
    name, _, rest = text.partition("+")
    id_hex, _, encoded = rest.partition("+")
    if not encoded:
        raise NoteError("a verifier key has three parts, NAME+KEYID+KEY, joined by '+'")
    if not _valid_name(name):
        raise NoteError(f"the verifier key's name {name!r} has spaces or is empty")
    if not re.fullmatch(r"[0-9a-fA-F]{8}", id_hex):
        raise NoteError(f"the verifier key's id {id_hex!r} is not 8 hexadecimal digits")
    data = _b64decode(encoded)
    if not data:
        raise NoteError("the verifier key's last part is not base64")
    if _key_hash(name, data) != int(id_hex, 16):
        raise NoteError("the verifier key's id does not match its name and key: it was altered")
    if data[0] != ED25519:
        raise NoteError(f"the verifier key is of algorithm {data[0]}; only Ed25519 (1) is known")
    if len(data) != 1 + 32:
        raise NoteError(f"the verifier key's Ed25519 key is {len(data) - 1} bytes, not 32")
    return VerifierKey(name, int(id_hex, 16), data[1:])


def _check_characters(note: bytes, what: str) -> None:
    """Go's rule: valid UTF-8 with no ASCII control character but the newline."""
    try:
        text = note.decode()
    except UnicodeDecodeError as error:
        raise NoteError(f"the {what} is not valid UTF-8 (byte {error.start})") from None
    bad = next((c for c in text if c < " " and c != "\n"), None)
    if bad is not None:
        raise NoteError(f"the {what} contains a control character (0x{ord(bad):02x})")


def sign_note(text: bytes, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """The signed note: `text`, a blank line, and `— <name> <base64(key id ‖ signature)>`."""
    _check_characters(text, "text to sign")
    if not text.endswith(b"\n"):
        raise NoteError("the text to sign must end with a newline")
    raw = _raw(private_key.public_key())
    if not _valid_name(name):
        raise NoteError(f"{name!r} is not a valid key name: no spaces or '+', not empty")
    blob = key_id(name, raw).to_bytes(4, "big") + private_key.sign(text)
    return text + b"\n" + SIGNATURE_PREFIX + f"{name} ".encode() + base64.b64encode(blob) + b"\n"


def _split_note(note: bytes) -> tuple[bytes, list[bytes]]:
    """The text and signature lines of a note, as Go's note.Open splits them."""
    if not isinstance(note, bytes):
        raise NoteError("the note must be bytes")
    _check_characters(note, "note")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise NoteError("the note has no blank line between its text and its signatures")
    text, signatures = note[: split + 1], note[split + 2 :]
    if not signatures:
        raise NoteError("the note has no signature after its blank line")
    if not signatures.endswith(b"\n"):
        raise NoteError("the note's last signature line does not end: the note is truncated")
    lines = signatures[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    return text, lines


def _parse_signature(line: bytes, number: int) -> tuple[str, int, bytes]:
    """The key name, key id and signature bytes of one signature line."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"signature line {number} does not start with an em dash and a space")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].decode().partition(" ")
    if not _valid_name(name):
        raise NoteError(f"signature line {number} has no valid key name")
    blob = _b64decode(encoded)
    if blob is None or not encoded:
        raise NoteError(f"signature line {number}'s signature is not base64")
    if len(blob) < 5:
        raise NoteError(f"signature line {number}'s signature is too short")
    return name, int.from_bytes(blob[:4], "big"), blob[4:]


def verify_note(note: bytes, verifier_key: str) -> bytes:
    """The text of `note` once its signature by `verifier_key` is checked (Go's note.Open
    rules); signatures by other keys, a witness's co-signature say, are allowed and ignored."""
    key = parse_verifier_key(verifier_key)
    text, lines = _split_note(note)
    signers = []
    verified = False
    for number, line in enumerate(lines, 1):
        name, key_hash, signature = _parse_signature(line, number)
        signers.append((name, key_hash))
        if verified or (name, key_hash) != (key.name, key.key_id):
            continue  # another key's, or the same signature twice
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, text)
        except (InvalidSignature, ValueError):
            raise NoteError(
                f"the signature by {key.name} does not match the note: the note or its "
                "signature was altered after signing"
            ) from None
        verified = True
    if not verified:
        raise NoteError(_unsigned(key, signers))
    return text


def _unsigned(key: VerifierKey, signers: list[tuple[str, int]]) -> str:
    same_name = sorted({f"{key_hash:08x}" for name, key_hash in signers if name == key.name})
    if same_name:
        return (
            f"the note is signed by a key named {key.name} but not by the key given "
            f"(id {key.key_id:08x}; the note's: {', '.join(same_name)})"
        )
    names = ", ".join(sorted({name for name, _ in signers}))
    return f"the note has no signature by {key.name}; it is signed by {names}"


def open_note(note: bytes, verifier_key: str, origin: str | None = None) -> Checkpoint:
    """The checkpoint in a note signed by `verifier_key`. Its origin must be `origin`, by
    default the key's name (a log's checkpoints are signed by the key named after it)."""
    checkpoint = parse_checkpoint(verify_note(note, verifier_key))
    name = parse_verifier_key(verifier_key).name
    expected = name if origin is None else origin
    if checkpoint.origin != expected:
        because = f"the key is named {name}" if origin is None else f"{origin} was expected"
        raise NoteError(f"the checkpoint is for the log {checkpoint.origin}, but {because}")
    return checkpoint


# --- The command line -----------------------------------------------------------------------


def event_leaf(
    position: int, originator_id: str, originator_version: int, topic: str, state: bytes
) -> bytes:
    """An event's leaf: SHA-256 of its position, identity, version and topic, one per line,
    then its stored state bytes (the hash chain's content hash, as raw bytes)."""
    head = f"{position}\n{originator_id}\n{originator_version}\n{topic}\n"
    return hashlib.sha256(head.encode() + state).digest()


class DocumentError(ValueError):
    """A proof document that is not shaped as `pm-ops checkpoints` prints it."""


def _field(
    document: dict[str, Any], name: str, kind: type, described: str, owner: str = "the proof file"
) -> Any:
    if name not in document:
        raise DocumentError(f'{owner} has no "{name}"')
    value = document[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DocumentError(f'"{name}" in {owner} must be {described}')
    return value


def _count(
    document: dict[str, Any], name: str, minimum: int = 0, owner: str = "the proof file"
) -> int:
    value = _field(document, name, int, "a whole number", owner)
    if not minimum <= value <= MAX_TREE_SIZE:
        raise DocumentError(f'"{name}" in {owner} must be a whole number from {minimum}')
    return value


def _digest(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not DIGEST_HEX.fullmatch(value):
        raise DocumentError(f'"{name}" must be a SHA-256 hash in 64 hexadecimal digits')
    return bytes.fromhex(value)


def _proof(document: dict[str, Any]) -> list[bytes]:
    items = _field(document, "proof", list, "a list of hashes")
    return [_digest(item, f"proof item {number}") for number, item in enumerate(items, 1)]


def _note(document: dict[str, Any], name: str) -> bytes:
    # surrogatepass: a lone surrogate becomes bytes open_note rejects as bad UTF-8, in words
    return _field(document, name, str, "the signed note, as a string").encode(
        "utf-8", "surrogatepass"
    )


def _open(document: dict[str, Any], name: str, key: str, origin: str | None) -> Checkpoint:
    try:
        return open_note(_note(document, name), key, origin)
    except NoteError as error:
        raise NoteError(f'"{name}": {error}') from None


def _event_leaf(document: dict[str, Any], position: int) -> bytes:
    """The leaf recomputed from the proof's "event", checked to be at the proof's position."""
    event = _field(document, "event", dict, "an object")
    owner = "the event"
    at = _count(event, "position", owner=owner)
    originator_id = _field(event, "originator_id", str, "a string", owner)
    version = _count(event, "originator_version", owner=owner)
    topic = _field(event, "topic", str, "a string", owner)
    state = _b64decode(_field(event, "state", str, "the stored bytes in base64", owner))
    if state is None:
        raise DocumentError('"state" in the event is not base64')
    if at != position:
        raise DocumentError(f"the event is at log position {at}, the proof at {position}")
    return event_leaf(position, originator_id, version, topic, state)


def check_inclusion(document: dict[str, Any], key: str, origin: str | None = None) -> str:
    """What an inclusion proof document proves, in a sentence; raises if it does not."""
    position, index = _count(document, "position"), _count(document, "index")
    size = _count(document, "tree_size", 1)
    leaf = _digest(_field(document, "leaf", str, "a string of hexadecimal digits"), "leaf")
    proof = _proof(document)
    checkpoint = _open(document, "checkpoint", key, origin)
    if "event" in document and _event_leaf(document, position) != leaf:
        raise ProofError("the event's content does not hash to the proof's leaf")
    if checkpoint.size != size:
        raise ProofError(
            f"the proof is for {_entries(size)}; the checkpoint signs {checkpoint.size}"
        )
    verify_inclusion(index, size, leaf, proof, checkpoint.root)
    signer = parse_verifier_key(key).name
    event = "; the event shown hashes to that entry" if "event" in document else ""
    return (
        f"entry at log position {position} (index {index}) is in the tree of "
        f"{_entries(size)} signed by {signer}{event}"
    )


def check_consistency(document: dict[str, Any], key: str, origin: str | None = None) -> str:
    """What a consistency proof document proves, in a sentence; raises if it does not."""
    old_size, new_size = _count(document, "from", 1), _count(document, "to", 1)
    proof = _proof(document)
    old = _open(document, "from_checkpoint", key, origin)
    new = _open(document, "to_checkpoint", key, origin)
    for name, size, checkpoint in (("from", old_size, old), ("to", new_size, new)):
        if checkpoint.size != size:
            raise ProofError(
                f'"{name}" is {size} but its checkpoint signs {_entries(checkpoint.size)}'
            )
    verify_consistency(old_size, new_size, old.root, new.root, proof)
    signer = parse_verifier_key(key).name
    return (
        f"the tree of {_entries(new_size)} signed by {signer} contains its tree of "
        f"{_entries(old_size)} unchanged"
    )


def _read(path: str) -> bytes:
    """The bytes at `path` ("-": standard input); OSError when they cannot be read."""
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as file:
        return file.read()


def _document(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise DocumentError(f"the proof file is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise DocumentError("the proof file must hold a JSON object")
    return document


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transparency.py",
        description="Check a pm-ops checkpoint proof with no database and no pm-ops.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in (
        ("inclusion", "an entry is in the tree a checkpoint signs"),
        ("consistency", "a later checkpoint's tree contains an earlier one's unchanged"),
    ):
        command = commands.add_parser(name, help=summary, description=f"Check that {summary}.")
        command.add_argument("--key", required=True, help="the log's verifier key")
        command.add_argument("--origin", help="the log name to insist on (default: the key's)")
        command.add_argument("proof", metavar="PROOF.json", help='the proof document, "-": stdin')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 proven, 1 not, 2 usage)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage and the reason
        return stop.code if isinstance(stop.code, int) else 2
    try:
        parse_verifier_key(args.key)
        data = _read(args.proof)
    except NoteError as error:
        return _usage_error(f"--key: {error}")
    except OSError as error:
        return _usage_error(f"cannot read {args.proof}: {error.strerror or error}")
    check = check_inclusion if args.command == "inclusion" else check_consistency
    try:
        print(f"OK: {check(_document(data), args.key, args.origin)}")
    except ValueError as error:  # ProofError, NoteError, DocumentError
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # an auditor's tool answers in a sentence, never a traceback
        print(f"FAILED: the proof could not be checked ({error!r})", file=sys.stderr)
        return 1
    return 0


def _usage_error(message: str) -> int:
    print(f"transparency.py: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
