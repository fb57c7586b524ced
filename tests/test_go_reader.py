"""Go's own readers of the formats, golang.org/x/mod/sumdb/note (note.Open) and
golang.org/x/mod/sumdb/tlog (CheckRecord, CheckTree), accept the checkpoints and proofs our
modules make and reject altered ones. tests/go/checkproof is built against Debian's
golang-golang-x-mod-dev in GOPATH mode (`make go` installs it)."""

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.signed_log import SignedLog

SOURCE = Path(__file__).parent / "go" / "checkproof"
GOPATH = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put Go sources


def missing_go() -> str | None:
    if not shutil.which("go"):
        return "the go command is not installed"
    if not (GOPATH / "src/golang.org/x/mod/sumdb/note").is_dir():
        return f"golang.org/x/mod is not under {GOPATH}"
    return None


@pytest.fixture(scope="module")
def checkproof(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = missing_go()
    if missing:
        message = f"{missing}: `make go` installs golang-go and golang-golang-x-mod-dev"
        if IN_CI:
            pytest.fail(f"{message}; in CI Go's reader must check our checkpoints")
        pytest.skip(message)
    binary = tmp_path_factory.mktemp("go") / "checkproof"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": ""}
    if not any(env.get(name) for name in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(binary.parent / "cache")  # go refuses to build without one
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return binary


def go_check(binary: Path, kind: str, key: str, document: dict[str, Any]) -> str:
    result = subprocess.run(
        [str(binary), kind, key],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.strip()


def altered(hex_hash: str) -> str:
    return f"{int(hex_hash[0], 16) ^ 1:x}{hex_hash[1:]}"


def test_go_accepts_our_inclusion_proofs(checkproof: Path) -> None:
    log = SignedLog(300)
    for size in (1, 2, 3, 7, 8, 9, 100, 255, 256, 257, 300):
        for index in {0, size - 1, random.randrange(size)}:
            document = log.inclusion(index, size)
            assert go_check(checkproof, "inclusion", log.verifier, document) == "ok", (index, size)


def test_go_accepts_our_consistency_proofs(checkproof: Path) -> None:
    log = SignedLog(300)
    new = random.randint(2, 300)
    pairs = [(1, 1), (1, 2), (3, 7), (4, 8), (7, 8), (8, 9), (100, 257), (256, 300), (299, 300)]
    for old, size in [*pairs, (random.randint(1, new), new)]:
        document = log.consistency(old, size)
        assert go_check(checkproof, "consistency", log.verifier, document) == "ok", (old, size)


def test_go_rejects_what_was_altered(checkproof: Path) -> None:
    log = SignedLog(40)
    good = log.inclusion(17, 33)
    assert go_check(checkproof, "inclusion", log.verifier, good) == "ok"
    proof = [altered(good["proof"][0]), *good["proof"][1:]]
    unproven, unsigned = "invalid transparency proof", "note has no verifiable signatures"
    cases = [
        ({**good, "proof": proof}, unproven),
        ({**good, "leaf": altered(good["leaf"])}, unproven),
        ({**good, "index": 16}, unproven),
        (
            {**good, "checkpoint": good["checkpoint"].replace("\n33\n", "\n34\n")},
            "invalid signature",
        ),
        ({**good, "checkpoint": SignedLog(33).checkpoint(33)}, unsigned),
    ]
    for document, reason in cases:
        assert go_check(checkproof, "inclusion", log.verifier, document).startswith(
            f"rejected: {reason}"
        )
    consistency = log.consistency(9, 40)
    assert go_check(checkproof, "consistency", log.verifier, consistency) == "ok"
    consistency["proof"][-1] = altered(consistency["proof"][-1])
    answer = go_check(checkproof, "consistency", log.verifier, consistency)
    assert answer == "rejected: invalid transparency proof"
