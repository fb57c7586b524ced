"""The console in a real browser: Debian's Chromium driven by Playwright, against a
real `pm-ops serve` process, on SQLite and on PostgreSQL. Screenshots of every page
are left in test-artifacts/console/ (not committed)."""

import csv
import io
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eventsourcing.persistence import PersistenceError

from projections.store import open_views
from tests.conftest import IN_CI, set_code_body
from tests.server import running_server
from tests.test_audit_cli import read_state, tamper

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
READ_MODELS = ("state", "audit", "chain", "activity")

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing (apt-get install chromium; make test does it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def shoot(page, config, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    store = "postgres" if config.is_postgres else "sqlite"
    page.screenshot(path=str(ARTIFACTS / f"{store}-{name}.png"), full_page=True)


def call(base: str, token: str, path: str, body: dict, workflow: str) -> dict:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-CIO-Idempotency-Key": uuid.uuid4().hex,
            "X-Ops-Workflow": workflow,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def set_code(base: str, directory, code: str, workflow: str) -> None:
    body = set_code_body(directory.person_id, code=code)
    assert call(base, directory.token, "/api/v1/ops/people/code", body, workflow)["data"]


def caught_up(services) -> None:
    """Wait until the server's projections have read the whole log."""
    views = open_views(services.app, services.config)
    deadline = time.monotonic() + 20
    while True:
        head = services.app.recorder.max_notification_id() or 0
        try:
            if all(views.position(name) >= head for name in READ_MODELS):
                return
        except PersistenceError:  # the server's projections have not created their tables yet
            pass
        assert time.monotonic() < deadline, "the projections did not catch up"
        time.sleep(0.2)


def sign_in(page, base: str, token: str) -> None:
    """By keyboard alone: the token field has the focus; Enter submits."""
    page.goto(f"{base}/console/audit")
    assert "/console/sign-in" in page.url  # no session: sent to sign in
    # the token field takes the focus as the page loads (autofocus; no click needed)
    page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")
    page.keyboard.insert_text(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")


def assert_every_control_labelled(page) -> None:
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label'))
            .map(el => el.name)"""
    )
    assert unlabelled == []


def audit_positions(page) -> list[int]:
    cells = page.locator("#audit-table tbody tr td:first-child").all_inner_texts()
    return [int(cell) for cell in cells if cell.strip().isdigit()]


def test_an_auditor_answers_who_changed_a_code_when_and_from_which_workflow(
    config, services, directory, page
):
    audit_token = directory.issue(scopes=("audit:read",), actor="Audit team")
    with running_server(config.database_url) as base:
        # No token, and an operation token, do not get in.
        page.goto(f"{base}/console/integrity")
        assert "/console/sign-in" in page.url
        assert_every_control_labelled(page)
        shoot(page, config, "sign-in")
        sign_in(page, base, directory.token)
        assert "cannot open the console" in page.get_by_role("alert").inner_text()
        assert "/console/sign-in" in page.url

        set_code(base, directory, "VC-Old", "Autumn campaign")
        time.sleep(1.1)
        between = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        time.sleep(1.1)
        set_code(base, directory, "VC-New", "Winter campaign")
        caught_up(services)

        sign_in(page, base, audit_token)
        assert page.url.endswith("/console/audit")
        assert page.get_by_text(f"token {audit_token}").count() == 0
        assert audit_token not in page.content()
        everything = audit_positions(page)
        row = page.locator("#audit-table tbody tr", has_text="Winter campaign")
        assert "VC-Old → VC-New" in row.inner_text()
        assert_every_control_labelled(page)
        shoot(page, config, "audit")

        # Filters narrow the table; the downloads hold exactly what it shows.
        page.get_by_label("Workflow").fill("winter campaign")
        page.get_by_role("button", name="Apply filters").click()
        narrowed = audit_positions(page)
        assert len(narrowed) == 1 and set(narrowed) < set(everything)
        with page.expect_download() as download:
            page.get_by_role("link", name="CSV").click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert [int(r["position"]) for r in rows] == narrowed
        assert rows[0]["previous_value"] == "VC-Old" and rows[0]["new_value"] == "VC-New"
        shoot(page, config, "audit-filtered")

        # The person: now, the history from the log, and the state as of an instant.
        page.locator("#audit-table tbody tr a").first.click()
        assert page.url.endswith(f"/console/people/{directory.person_id}")
        assert page.locator("#current-code").inner_text() == "VC-New"
        history = page.locator("#history-table tbody").inner_text()
        assert "SignupCodeChanged" in history and "Winter campaign" in history
        page.get_by_label("Date and time (UTC)").fill(between)
        page.get_by_role("button", name="Show state then").click()
        assert page.locator("#as-of-code").inner_text() == "VC-Old"
        assert_every_control_labelled(page)
        shoot(page, config, "person")

        page.get_by_role("link", name="Activity").click()
        page.get_by_label("Break calls down by").select_option("workflow")
        page.get_by_role("button", name="Show").click()
        assert page.locator("svg[role=img] rect").count() >= 2
        assert "Winter campaign" in page.locator("#activity-totals").inner_text()
        assert_every_control_labelled(page)
        shoot(page, config, "activity")

        page.get_by_role("link", name="Integrity").click()
        page.get_by_role("button", name="Run verify now").click()
        result = page.locator("#verify-result")
        result.wait_for()
        assert "OK" in result.inner_text()
        assert_every_control_labelled(page)
        shoot(page, config, "integrity")

        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{base}/console/audit")
        assert "/console/sign-in" in page.url


def test_verify_in_the_browser_reports_the_position_of_an_event_edited_in_sql(
    config, services, directory, page
):
    audit_token = directory.issue(scopes=("audit:read",), actor="Audit team")
    with running_server(config.database_url) as base:
        set_code(base, directory, "VC-Kept", "Spring campaign")
        caught_up(services)
        sign_in(page, base, audit_token)
        page.get_by_label("Workflow").fill("Spring campaign")
        page.get_by_role("button", name="Apply filters").click()
        (edited,) = audit_positions(page)
        state = read_state(config, edited).replace(b'"VC-Kept"', b'"VC-Forged"')
        tamper(
            config,
            services,
            "UPDATE {t} SET state=? WHERE rowid=?",
            "UPDATE {t} SET state=%s WHERE notification_id=%s",
            (state, edited),
        )
        page.get_by_role("link", name="Integrity").click()
        page.get_by_role("button", name="Run verify now").click()
        findings = page.locator("#verify-findings")
        findings.wait_for()
        assert "FAILED" in page.locator("#verify-result").inner_text()
        assert f"position {edited}: event was changed after it was recorded" in (
            findings.inner_text()
        )
        shoot(page, config, "integrity-tampered")


def test_an_auditor_sees_the_signed_checkpoint_and_checks_an_entry_s_proof(
    config, services, directory, page, checkpoint_key, tmp_path
):
    from projections.transparency import check_inclusion
    from tests.test_console_checkpoints import verifier_key

    audit_token = directory.issue(scopes=("audit:read",), actor="Audit team")
    notes = tmp_path / "notes"
    notes.mkdir()
    signing = {
        "OPS_CHECKPOINT_KEY": checkpoint_key,
        "OPS_CHECKPOINT_DIR": str(notes),
        "OPS_CHECKPOINT_INTERVAL": "0.5",
    }
    with running_server(config.database_url, env=signing) as base:
        set_code(base, directory, "VC-Signed", "Proof campaign")
        caught_up(services)
        witnessed(services)
        sign_in(page, base, audit_token)
        page.get_by_label("Workflow").fill("Proof campaign")
        page.get_by_role("button", name="Apply filters").click()
        (position,) = audit_positions(page)
        shoot(page, config, "audit-proofs")
        with page.expect_download() as download:
            page.get_by_role("link", name=f"proof of position {position}").click()
        proof = json.loads(Path(download.value.path()).read_text())

        page.get_by_role("link", name="Integrity").click()
        origin, size, root = (notes / f"{proof['tree_size']}.note").read_text().split("\n")[:3]
        assert page.locator("#checkpoint-size").inner_text() == f"{size} events"
        assert page.locator("#checkpoint-root").inner_text() == root
        key = page.locator("#verifier-key").inner_text()
        assert key == verifier_key(checkpoint_key, origin)
        assert f"position {position}" in check_inclusion(proof, key)
        witness = page.locator("#witnesses-table tr", has_text="witness-directory")
        assert "holds the latest" in witness.inner_text()
        assert page.get_by_role("link", name="transparency.py").count() == 1
        assert_every_control_labelled(page)
        shoot(page, config, "integrity-checkpoints")


def witnessed(services) -> None:
    """Wait until the server has signed a checkpoint of the whole log and the directory
    witness holds it."""
    views = open_views(services.app, services.config)
    tree = services.read_models.tree
    deadline = time.monotonic() + 30
    while True:
        head = services.app.recorder.max_notification_id() or 0
        latest = tree.latest()
        whole_log = latest is not None and latest.position >= head
        if whole_log and views.position("witness-directory") >= latest.size:
            return
        assert time.monotonic() < deadline, "no checkpoint of the whole log was witnessed"
        time.sleep(0.2)
