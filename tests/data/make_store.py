"""Writes a store with the release checked out, for the tests that prove later releases
still read it (tests/test_upgrade.py). Run from the repository root:

    .venv/bin/python tests/data/make_store.py tests/data/legacy_v0_2

The story is 0.1.0's (tests/data/legacy_v0_1): people imported, an email changed,
communities created and renamed, members added, codes set and cleared, calls by email,
404/409 deliveries, 403/422 rejected calls, a call without a key, a replay, tokens issued,
rotated and revoked; then what the release added: a token with a sealed Customer.io signing
key, every projection caught up (activity included), and signed checkpoints kept by a
witness directory (the signing key is the fixture's own, `checkpoint-key.pem`). It writes
`ops.db` and the `.jsonl` answers of `history`, `audit` and `state` beside it."""

import json
import shutil
import sys
import time
from pathlib import Path

import orjson
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from falcon import testing

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.bootstrap import bootstrap  # noqa: E402
from api.cli import COMMAND_MODULES, cli  # noqa: E402
from api.config import Config  # noqa: E402

ADD, CODE = "/api/v1/ops/people/communities/add", "/api/v1/ops/people/code"
SECRET = "90HE7BQ6/LMUUI9FKPXcHPfrNnaajK21tGU2KBFWRKY="  # the fixture's own


def pm_ops(config: Config, *args: str) -> str:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"api.cli.{name}").register(cli)
    env = {"OPS_DATABASE_URL": config.database_url, "OPS_SECRET_KEY": SECRET}
    if config.checkpoint_key:
        env |= {
            "OPS_CHECKPOINT_KEY": config.checkpoint_key,
            "OPS_CHECKPOINT_DIR": config.checkpoint_dir,
        }
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, (args, result.output, repr(result.exception))
    return result.stdout


def body(path: str, person: object = None, **attributes: object) -> bytes:
    kind = "communityMembership" if path == ADD else "personSignupCode"
    attrs = dict(attributes)
    if person is not None:
        attrs["personId"] = person
    return orjson.dumps({"data": {"type": kind, "attributes": attrs}})


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*"):
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    key = target / "checkpoint-key.pem"  # the fixture's own, made afresh with it
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    witness = target / "witness"
    witness.mkdir()
    config = Config(
        database_url=f"sqlite:///{target}/ops.db",
        secret_key=SECRET,
        checkpoint_key=str(key),
        checkpoint_dir=str(witness),
    )
    (target / "people.csv").write_text(
        "id,email\n110,ada@example.com\n111,grace@example.com\n"
        "112,shared@example.com\n113,Shared@Example.com\n"
    )
    (target / "communities.csv").write_text("id,name\n7,Founders\n42,Partners\n")
    pm_ops(config, "directory", "import", "--people", str(target / "people.csv"),
           "--communities", str(target / "communities.csv"))  # fmt: skip
    (target / "people.csv").write_text("id,email\n110,ada.lovelace@example.com\n")
    (target / "communities.csv").write_text("id,name\n42,Partners & Friends\n")
    pm_ops(config, "directory", "import", "--people", str(target / "people.csv"),
           "--communities", str(target / "communities.csv"))  # fmt: skip
    last = lambda out: out.strip().splitlines()[-1]  # noqa: E731
    cio = last(pm_ops(config, "tokens", "issue", "--name", "customerio-workspace", "--actor",
                      "Customer.io", "--allow-cidr", "127.0.0.0/8"))  # fmt: skip
    ops = last(pm_ops(config, "tokens", "issue", "--name", "marketing-ops", "--actor",
                      "Marketing Ops", "--scope", "code:set"))  # fmt: skip
    old = last(pm_ops(config, "tokens", "issue", "--name", "old-script", "--actor",
                      "Marketing Ops", "--scope", "community:add"))  # fmt: skip
    signed = last(pm_ops(config, "tokens", "issue", "--name", "signed-workspace", "--actor",
                         "Customer.io", "--cio-signing-key", "fixture-signing-key"))  # fmt: skip
    ops = last(pm_ops(config, "tokens", "rotate", "marketing-ops"))
    pm_ops(config, "tokens", "revoke", "old-script")
    del old, signed  # revoked, and a token whose key stays sealed in the log

    with bootstrap(config) as services:
        client = testing.TestClient(create_app(services))

        def call(path: str, token: str, data: bytes, key: str | None = None, **headers: str) -> int:
            sent = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                **headers,
            }
            if key:
                sent["X-CIO-Idempotency-Key"] = key
            return client.simulate_post(path, body=data, headers=sent).status_code

        assert (
            call(ADD, cio, body(ADD, 110, communityId=42), "k-1", **{"X-Ops-Workflow": "Welcome"})
            == 200
        )
        assert (
            call(ADD, cio, body(ADD, 110, communityId=42), "k-1", **{"X-Ops-Workflow": "Welcome"})
            == 200
        )
        assert (
            call(
                CODE,
                ops,
                body(CODE, 110, code="VC-Partners"),
                "k-2",
                **{"X-Ops-Workflow": "Partners"},
            )
            == 200
        )
        time.sleep(1.2)  # the instant of state --as-of falls between two changes
        as_of = time.time()
        time.sleep(1.2)
        assert (
            call(
                CODE,
                ops,
                body(CODE, None, email=" ADA.LOVELACE@example.com ", code="VC-Angels"),
                "k-3",
                **{"X-Ops-Workflow": "Partners"},
            )
            == 200
        )
        assert call(CODE, ops, body(CODE, 110, code=None), "k-4") == 200
        assert call(CODE, ops, body(CODE, 110, code=None), "k-5") == 200  # unchanged
        assert call(CODE, ops, body(CODE, 111, code="G-1"), "k-6") == 200
        assert call(CODE, ops, body(CODE, 999, code="X"), "k-7") == 404
        assert call(CODE, ops, body(CODE, None, email="shared@example.com", code="X"), "k-8") == 409
        assert call(ADD, ops, body(ADD, 110, communityId=42), "k-9") == 403
        assert call(CODE, ops, body(CODE, 110, code=""), "k-10") == 422
        assert call(ADD, cio, body(ADD, 111, communityId=7)) == 200  # no key: a generated one
    pm_ops(config, "projections", "run", "--once")

    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(as_of, UTC).isoformat().replace("+00:00", "Z")
    (target / "as_of.txt").write_text(moment + "\n")
    for name, args in (
        ("history_110.jsonl", ("history", "--person", "110")),
        ("history_111.jsonl", ("history", "--person", "111")),
        ("audit.jsonl", ("audit",)),
        ("state.jsonl", ("state",)),
        ("state_as_of.jsonl", ("state", "--as-of", moment)),
        ("checkpoints.jsonl", ("checkpoints", "list")),
    ):
        (target / name).write_text(pm_ops(config, *args, "--format", "json"))
    for scratch in ("people.csv", "communities.csv", *(p.name for p in target.glob("*.lock"))):
        (target / scratch).unlink()
    print(json.dumps({"store": str(target), "as_of": moment}))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
