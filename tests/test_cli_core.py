"""The real `pm-ops` console script, run as engineering runs it, against both stores."""

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from aggregates import Person
from tests.conftest import POSTGRES_URL, add_member_body, new_id, set_code_body

ADD = "/api/v1/ops/people/communities/add"
CODE = "/api/v1/ops/people/code"
PM_OPS = shutil.which("pm-ops", path=str(Path(sys.executable).parent)) or shutil.which("pm-ops")


def pm_ops(
    database_url: str | None, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    assert PM_OPS, "the pm-ops console script is not installed"
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPS_", "SLACK_")) or k == "OPS_SECRET_KEY"
    }
    if database_url is not None:
        environ["OPS_DATABASE_URL"] = database_url
    environ.update(env)
    result = subprocess.run(
        [PM_OPS, *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream, stream
    return result


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def refused(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert result.returncode != 0, result.stdout
    assert result.stderr.strip(), "an error must be explained on stderr"
    for phrase in phrases:
        assert phrase.lower() in result.stderr.lower(), result.stderr
    return result.stderr


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.rstrip("\n").splitlines()[-1]


def call(client: Any, path: str, body: dict[str, Any], token: str) -> Any:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return client.simulate_post(path, body=orjson.dumps(body), headers=headers)


def eventually(seconds: float, check: Any) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def topics(services: Any) -> list[str]:
    return [n.topic for n in services.app.recorder.select_notifications(1, 100_000)]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def url(config: Any) -> str:
    return config.database_url


@pytest.fixture
def people(services: Any, url: str, tmp_path: Path) -> dict[str, Any]:
    """A directory imported through the CLI: one person, one community."""
    person, community = new_id(), new_id()
    email = f"cli.{uuid.uuid4().hex[:8]}@example.com"
    people_csv = write(tmp_path / "people.csv", f"id,email\n{person},{email}\n")
    communities_csv = write(tmp_path / "communities.csv", f"id,name\n{community},Founders\n")
    ok(
        pm_ops(
            url,
            "directory",
            "import",
            "--people",
            str(people_csv),
            "--communities",
            str(communities_csv),
        )
    )
    return {"person": person, "community": community, "email": email}


# --- help ---------------------------------------------------------------------

COMMANDS = [
    (),
    ("tokens",),
    ("tokens", "issue"),
    ("tokens", "list"),
    ("tokens", "revoke"),
    ("tokens", "rotate"),
    ("directory",),
    ("directory", "import"),
    ("demo",),
    ("serve",),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pm-ops")
def test_every_command_has_help(command, tmp_path):
    result = ok(pm_ops(f"sqlite:///{tmp_path}/unused.db", *command, "--help"))
    assert "Usage:" in result.stdout
    assert f"pm-ops {' '.join(command)}".strip() in result.stdout
    assert not (tmp_path / "unused.db").exists(), "--help must not touch the store"


def test_top_level_help_lists_the_core_commands(tmp_path):
    result = ok(pm_ops(None, "--help", cwd=tmp_path))
    for command in ("tokens", "directory", "demo", "serve"):
        assert command in result.stdout


# --- tokens -------------------------------------------------------------------


def test_issue_prints_the_token_alone_on_the_last_line_and_it_works(url, client, people):
    name = f"cio-{uuid.uuid4().hex[:6]}"
    result = ok(pm_ops(url, "tokens", "issue", "--name", name, "--actor", "Customer.io"))
    token = last_line(result)
    assert token.startswith("pmo_") and " " not in token
    assert result.stdout.strip() == token, "stdout carries the token and nothing else"
    assert name in result.stderr
    added = call(client, ADD, add_member_body(people["person"], people["community"]), token)
    assert added.status_code == 200, added.text
    assert added.json["data"]["attributes"]["alreadyMember"] is False
    code = call(client, CODE, set_code_body(people["person"], code="VC"), token)
    assert code.status_code == 200, code.text


def test_issue_with_options_is_enforced_by_the_api(url, client, people, services):
    name = f"limited-{uuid.uuid4().hex[:6]}"
    token = last_line(
        ok(
            pm_ops(
                url,
                "tokens",
                "issue",
                "--name",
                name,
                "--actor",
                "Marketing Ops",
                "--scope",
                "code:set",
                "--rate-limit",
                "100",
            )
        )
    )
    refused_add = call(client, ADD, add_member_body(people["person"], people["community"]), token)
    assert refused_add.status_code == 403
    assert refused_add.json["errors"][0]["code"] == "forbidden"
    allowed = call(client, CODE, set_code_body(people["person"], code="VC"), token)
    assert allowed.status_code == 200
    [changed] = [
        services.app.mapper.to_domain_event(n)
        for n in services.app.recorder.select_notifications(1, 100_000)
        if n.topic.endswith("Person.SignupCodeChanged")
    ]
    assert changed.meta["actor"] == "Marketing Ops"
    assert changed.meta["token"] == name

    blocked = last_line(
        ok(
            pm_ops(
                url,
                "tokens",
                "issue",
                "--name",
                f"{name}-cidr",
                "--actor",
                "Customer.io",
                "--allow-cidr",
                "203.0.113.0/24",
            )
        )
    )
    result = call(client, CODE, set_code_body(people["person"], code="VC"), blocked)
    assert result.status_code == 403
    assert result.json["errors"][0]["code"] == "blocked"


def test_list_never_shows_token_values(url, services):
    name = f"listed-{uuid.uuid4().hex[:6]}"
    token = last_line(
        ok(
            pm_ops(
                url,
                "tokens",
                "issue",
                "--name",
                name,
                "--actor",
                "Customer.io",
                "--allow-cidr",
                "203.0.113.0/24",
                "--cio-signing-key",
                "s3cr3t-signing-key",
            )
        )
    )
    listing = ok(pm_ops(url, "tokens", "list"))
    output = listing.stdout + listing.stderr
    assert name in output
    assert "Customer.io" in output
    assert "203.0.113.0/24" in output
    assert "active" in output
    assert token not in output
    assert token.split("_", 2)[2] not in output, "the secret part must never be shown"
    assert "s3cr3t-signing-key" not in output
    assert "pmo_" not in output


def test_revoke_refuses_the_token(url, client, people):
    name = f"revoked-{uuid.uuid4().hex[:6]}"
    token = last_line(ok(pm_ops(url, "tokens", "issue", "--name", name, "--actor", "Customer.io")))
    body = add_member_body(people["person"], people["community"])
    assert call(client, ADD, body, token).status_code == 200
    result = ok(pm_ops(url, "tokens", "revoke", name))
    assert name in result.stdout + result.stderr
    assert eventually(5, lambda: call(client, ADD, body, token).status_code == 401)
    assert call(client, ADD, body, token).json["errors"][0]["code"] == "token_invalid"
    listing = ok(pm_ops(url, "tokens", "list")).stdout
    assert "revoked" in listing
    refused(pm_ops(url, "tokens", "revoke", name), "already revoked")
    refused(pm_ops(url, "tokens", "rotate", name), "revoked")


def test_rotate_refuses_the_old_value_and_accepts_the_new(url, client, people):
    name = f"rotated-{uuid.uuid4().hex[:6]}"
    old = last_line(ok(pm_ops(url, "tokens", "issue", "--name", name, "--actor", "Customer.io")))
    body = add_member_body(people["person"], people["community"])
    assert call(client, ADD, body, old).status_code == 200
    result = ok(pm_ops(url, "tokens", "rotate", name))
    new = last_line(result)
    assert result.stdout.strip() == new
    assert new.startswith("pmo_") and new != old
    assert eventually(5, lambda: call(client, ADD, body, old).status_code == 401)
    assert eventually(5, lambda: call(client, ADD, body, new).status_code == 200)
    assert call(client, ADD, body, old).status_code == 401


def test_token_errors_go_to_stderr_without_a_traceback(url, services):
    name = f"dup-{uuid.uuid4().hex[:6]}"
    ok(pm_ops(url, "tokens", "issue", "--name", name, "--actor", "Customer.io"))
    duplicate = pm_ops(url, "tokens", "issue", "--name", name, "--actor", "Customer.io")
    refused(duplicate, "already exists")
    assert duplicate.stdout.strip() == "", "no token may be printed when issuing failed"
    refused(pm_ops(url, "tokens", "revoke", "no-such-token"), "no token named")
    refused(pm_ops(url, "tokens", "rotate", "no-such-token"), "no token named")
    refused(
        pm_ops(url, "tokens", "issue", "--name", "x1", "--actor", "a", "--allow-cidr", "nonsense"),
        "--allow-cidr",
    )
    refused(
        pm_ops(url, "tokens", "issue", "--name", "x2", "--actor", "a", "--scope", "admin"), "scope"
    )
    refused(pm_ops(url, "tokens", "issue", "--name", "x3", "--actor", "a", "--rate-limit", "0"))
    refused(pm_ops(url, "tokens", "issue", "--actor", "a"), "--name")
    refused(pm_ops(url, "tokens", "issue", "--name", "  ", "--actor", "a"), "--name", "empty")
    refused(pm_ops(url, "tokens", "issue", "--name", "x4", "--actor", ""), "--actor", "empty")
    issued = [t for t in topics(services) if t.endswith("Token.Issued")]
    assert len(issued) == 1, "a refused issue must write nothing"


def test_a_token_name_means_the_same_with_stray_spaces(url, client, people):
    name = f"padded-{uuid.uuid4().hex[:6]}"
    token = last_line(ok(pm_ops(url, "tokens", "issue", "--name", f" {name} ", "--actor", "A")))
    assert f"'{name}'" in ok(pm_ops(url, "tokens", "revoke", f"{name} ")).stdout
    body = add_member_body(people["person"], people["community"])
    assert eventually(5, lambda: call(client, ADD, body, token).status_code == 401)


def test_a_bad_database_url_is_a_clear_error(tmp_path):
    refused(pm_ops("mysql://localhost/ops", "tokens", "list", cwd=tmp_path), "OPS_DATABASE_URL")
    refused(
        pm_ops("postgresql://postgres@127.0.0.1:1/nothing", "tokens", "list", cwd=tmp_path),
        "unreachable",
    )


# --- directory import -----------------------------------------------------------


def test_import_then_reimport_is_a_no_op(url, client, services, tmp_path):
    tag = uuid.uuid4().hex[:6]
    ids = [new_id() for _ in range(3)]
    community = new_id()
    people_csv = write(
        tmp_path / "people.csv",
        "id,email\n" + "".join(f"{pid},p{n}.{tag}@example.com\n" for n, pid in enumerate(ids)),
    )
    communities_csv = write(tmp_path / "communities.csv", f"id,name\n{community},VC Partners\n")
    args = (
        "directory",
        "import",
        "--people",
        str(people_csv),
        "--communities",
        str(communities_csv),
    )
    first = ok(pm_ops(url, *args))
    assert "people: 3 created" in first.stdout
    assert "communities: 1 created" in first.stdout
    head = services.app.recorder.max_notification_id()

    again = ok(pm_ops(url, *args))
    assert "people: 0 created, 0 email changed, 3 unchanged" in again.stdout
    assert "communities: 0 created, 0 renamed, 1 unchanged" in again.stdout
    assert services.app.recorder.max_notification_id() == head, "a re-import writes nothing"

    token = services.app.issue_token(
        "import-check", "Customer.io", ["community:add"], [], None, None
    )
    for pid in ids:
        result = call(client, ADD, add_member_body(pid, community), token)
        assert result.status_code == 200, result.text
    by_email = call(
        client, ADD, add_member_body(community=community, email=f"P1.{tag}@EXAMPLE.COM"), token
    )
    assert by_email.json["data"]["attributes"]["personId"] == ids[1]


def test_a_changed_email_is_an_email_changed_event(url, client, services, tmp_path):
    person, community = new_id(), new_id()
    old, new = f"old.{person}@example.com", f"new.{person}@example.com"
    communities_csv = write(tmp_path / "c.csv", f"id,name\n{community},Founders\n")
    ok(pm_ops(url, "directory", "import", "--communities", str(communities_csv)))
    ok(
        pm_ops(
            url,
            "directory",
            "import",
            "--people",
            str(write(tmp_path / "a.csv", f"id,email\n{person},{old}\n")),
        )
    )
    changed = ok(
        pm_ops(
            url,
            "directory",
            "import",
            "--people",
            str(write(tmp_path / "b.csv", f"id,email\n{person},{new}\n")),
        )
    )
    assert "1 email changed" in changed.stdout
    [event] = [
        services.app.mapper.to_domain_event(n)
        for n in services.app.recorder.select_notifications(1, 100_000)
        if n.topic == "aggregates.person:Person.EmailChanged"
    ]
    assert (event.previous_email, event.email) == (old, new)
    assert event.meta["actor"] == "directory import"
    # a case-only change is not a change
    same = ok(
        pm_ops(
            url,
            "directory",
            "import",
            "--people",
            str(write(tmp_path / "c2.csv", f"id,email\n{person},{new.upper()}\n")),
        )
    )
    assert "1 unchanged" in same.stdout

    token = services.app.issue_token(
        "email-check", "Customer.io", ["community:add"], [], None, None
    )
    found = call(client, ADD, add_member_body(community=community, email=new), token)
    assert found.json["data"]["attributes"]["personId"] == person
    gone = call(client, ADD, add_member_body(community=community, email=old), token)
    assert gone.status_code == 404
    assert gone.json["errors"][0]["code"] == "person_not_found"


def test_a_large_import_is_batched_and_a_rerun_is_a_no_op(url, client, services, tmp_path):
    """Thousands of rows span several batches (each read in one query and written in
    one transaction): people sharing an email inside a batch and across batches, a
    re-run that writes nothing, then changed emails that move between indexes."""
    tag, count, base = uuid.uuid4().hex[:6], 2500, new_id()
    ids = [base + n for n in range(count)]
    shared = f"shared.{tag}@example.com"

    def email(n: int, changed: bool = False) -> str:
        if n in (5, 6, 1500):  # two in the first batch, one in the second
            return shared
        return f"p{n}.{tag}{'.new' if changed else ''}@example.com"

    def people_file(name: str, changed: set[int]) -> Path:
        rows = "".join(f"{pid},{email(n, n in changed)}\n" for n, pid in enumerate(ids))
        return write(tmp_path / name, "id,email\n" + rows)

    community = new_id()
    ok(
        pm_ops(
            url,
            "directory",
            "import",
            "--communities",
            str(write(tmp_path / "c.csv", f"id,name\n{community},Big\n")),
        )
    )
    first = ok(pm_ops(url, "directory", "import", "--people", str(people_file("a.csv", set()))))
    assert f"people: {count} created, 0 email changed, 0 unchanged" in first.stdout
    head = services.app.recorder.max_notification_id()
    again = ok(pm_ops(url, "directory", "import", "--people", str(people_file("a.csv", set()))))
    assert f"people: 0 created, 0 email changed, {count} unchanged" in again.stdout
    assert services.app.recorder.max_notification_id() == head, "a re-import writes nothing"

    moved = {3, 1200, 2499}
    changed = ok(pm_ops(url, "directory", "import", "--people", str(people_file("b.csv", moved))))
    assert f"people: 0 created, {len(moved)} email changed" in changed.stdout

    token = services.app.issue_token("bulk-check", "Customer.io", ["community:add"], [], None, None)

    def by_email(address: str) -> Any:
        return call(client, ADD, add_member_body(community=community, email=address), token)

    for n in moved:
        assert by_email(email(n, True)).json["data"]["attributes"]["personId"] == ids[n]
        gone = by_email(email(n))
        assert gone.status_code == 404, gone.text
    assert by_email(email(2000)).json["data"]["attributes"]["personId"] == ids[2000]
    ambiguous = by_email(shared)
    assert ambiguous.status_code == 409, ambiguous.text
    assert "3 different people" in ambiguous.json["errors"][0]["detail"]


def test_an_import_the_store_refuses_midway_keeps_the_batches_before_and_a_rerun_ends_it(
    config, url, services, tmp_path
):
    """Batches are written while the next ones are read and classified: when the store
    refuses one (here a trigger refuses one person of the third batch of four), the
    import says so, the batches before it are stored, none after it is, and running
    the same file again imports exactly what is missing."""
    count, base = 3500, new_id()
    refused_person = base + 2100
    rows = "".join(f"{base + n},p{n}.{base}@example.com\n" for n in range(count))
    people_csv = write(tmp_path / "people.csv", "id,email\n" + rows)
    refuse_one_person(config, Person.create_id(refused_person))

    failed = pm_ops(url, "directory", "import", "--people", str(people_csv))
    refused(failed, "the store refused", "refused by this test")
    assert "created" not in failed.stdout, "nothing is reported imported"

    refuse_one_person(config, None)
    rerun = ok(pm_ops(url, "directory", "import", "--people", str(people_csv)))
    assert "people: 1500 created, 0 email changed, 2000 unchanged" in rerun.stdout


def refuse_one_person(config: Any, person: uuid.UUID | None) -> None:
    """A trigger that makes the store refuse to store `person`'s events (None: drop it)."""
    if config.is_postgres:
        events, function = f'"{config.schema}".pmops_events', f'"{config.schema}".refuse'
        statements = [f"DROP TRIGGER IF EXISTS refuse ON {events}"]
        if person:
            statements += [
                f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RAISE EXCEPTION 'refused by this test'; END $$",
                f"CREATE TRIGGER refuse BEFORE INSERT ON {events} FOR EACH ROW "
                f"WHEN (NEW.originator_id = '{person}') EXECUTE FUNCTION {function}()",
            ]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    statements = ["DROP TRIGGER IF EXISTS refuse"]
    if person:
        statements.append(
            "CREATE TRIGGER refuse BEFORE INSERT ON stored_events "
            f"WHEN NEW.originator_id = '{person.hex}' "  # as the library stores it
            "BEGIN SELECT RAISE(ABORT, 'refused by this test'); END"
        )
    with sqlite3.connect(config.database_url.removeprefix("sqlite:///")) as conn:
        for statement in statements:
            conn.execute(statement)


def test_a_bad_file_is_refused_whole_with_line_numbers(url, services, tmp_path):
    good, also_good, community = new_id(), new_id(), new_id()
    people_csv = write(
        tmp_path / "people.csv",
        "id,email\n"
        f"{good},good.{good}@example.com\n"  # line 2
        "abc,x@example.com\n"  # line 3
        f"{also_good},not-an-email\n"  # line 4
        f"{good},again@example.com\n"  # line 5
        "7,a@example.com,extra\n"  # line 6
        "-3,b@example.com\n",  # line 7
    )
    communities_csv = write(tmp_path / "communities.csv", f"id,name\n{community},Fine\n")
    before = services.app.recorder.max_notification_id()
    result = pm_ops(
        url,
        "directory",
        "import",
        "--communities",
        str(communities_csv),
        "--people",
        str(people_csv),
    )
    stderr = refused(result, "nothing was imported", "people.csv")
    for line in (3, 4, 5, 6, 7):
        assert f"line {line}:" in stderr
    assert "line 2:" not in stderr
    assert "appears more than once" in stderr
    assert services.app.recorder.max_notification_id() == before, "nothing of either file applied"

    bad_header = write(tmp_path / "header.csv", "person,email\n1,a@example.com\n")
    refused(pm_ops(url, "directory", "import", "--people", str(bad_header)), "line 1", "id,email")
    bad_community = write(tmp_path / "bad-c.csv", f"id,name\n{community},\n")
    refused(
        pm_ops(url, "directory", "import", "--communities", str(bad_community)),
        "line 2",
        "name is empty",
    )
    refused(
        pm_ops(url, "directory", "import", "--people", str(tmp_path / "missing.csv")), "missing.csv"
    )
    refused(pm_ops(url, "directory", "import"), "--people")
    assert services.app.recorder.max_notification_id() == before


# --- demo -----------------------------------------------------------------------


def test_demo_prints_a_token_and_curl_commands_that_work(url, client, tmp_path):
    result = ok(pm_ops(url, "demo", OPS_PUBLIC_URL="https://ops.example.test"))
    token = last_line(result)
    assert token.startswith("pmo_")
    assert "curl" in result.stdout
    assert "https://ops.example.test/api/v1/ops/people/communities/add" in result.stdout
    assert "https://ops.example.test/api/v1/ops/people/code" in result.stdout
    assert f"Authorization: Bearer {token}" in result.stdout
    assert "Content-Type: application/json" in result.stdout
    added = call(client, ADD, add_member_body(1001, 42), token)
    assert added.status_code == 200, added.text
    shared = call(client, ADD, add_member_body(community=42, email="shared@example.com"), token)
    assert shared.status_code == 409

    again = ok(pm_ops(url, "demo"))
    second = last_line(again)
    assert second != token
    assert eventually(
        5, lambda: call(client, ADD, add_member_body(1002, 7), second).status_code == 200
    )
    assert eventually(
        5, lambda: call(client, ADD, add_member_body(1002, 7), token).status_code == 401
    )
