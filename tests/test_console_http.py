"""The console's HTTP rules, through the Falcon app: who gets in, the cookie's flags,
CSRF, sessions that end, pagination and downloads. (tests/test_console_browser.py
drives the same pages in Chromium against a real server.)"""

import csv
import io
import logging
import re
import time
import uuid
from dataclasses import replace

import orjson
from falcon import testing

from api.app import create_app
from projections import catch_up_once
from tests.conftest import set_code_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
READ_MODELS = ("state", "audit", "chain", "activity")


def audit_token(directory) -> str:
    return directory.issue(scopes=("audit:read",), actor="Audit team")


def sign_in_form(client) -> str:
    page = client.simulate_get("/console/sign-in")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def post_sign_in(client, token: str, headers: dict[str, str] | None = None, **options):
    csrf = sign_in_form(client)
    return client.simulate_post(
        "/console/sign-in",
        body=f"csrf={csrf}&token={token}&next=/console/audit",
        headers={**FORM, **(headers or {}), "Cookie": f"pmops_console_sign_in={csrf}"},
        **options,
    )


def sign_in(client, token: str) -> dict[str, str]:
    result = post_sign_in(client, token)
    assert result.status_code == 303, result.text
    return {"Cookie": f"pmops_console={result.cookies['pmops_console'].value}"}


def csrf_of(page_text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page_text).group(1)


def catch_up(directory) -> None:
    services = directory.services
    catch_up_once(services.app, services.config, READ_MODELS)


def test_logged_out_is_sent_to_sign_in(client):
    result = client.simulate_get("/console/audit", query_string="person=5")
    assert result.status_code == 303
    assert result.headers["location"] == "/console/sign-in?next=%2Fconsole%2Faudit%3Fperson%3D5"
    assert client.simulate_get("/console").status_code == 303
    assert client.simulate_get("/console/audit.csv").status_code == 303
    assert client.simulate_post("/console/integrity/verify").status_code == 303
    missing = client.simulate_get("/console/nowhere")
    assert missing.status_code == 404 and "No such page" in missing.text
    assert client.simulate_get("/console/static/console.css").status_code == 200


def test_audit_token_signs_in_with_a_strict_http_only_cookie(client, directory):
    token = audit_token(directory)
    result = post_sign_in(client, token)
    assert result.status_code == 303 and result.headers["location"] == "/console/audit"
    cookie = result.cookies["pmops_console"]
    assert cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/console"
    assert not cookie.secure  # plain http here; https below
    assert token not in cookie.value and token not in result.headers["location"]
    page = client.simulate_get("/console/audit", headers=sign_in(client, token))
    assert page.status_code == 200 and "Audit trail" in page.text


def test_cookie_is_secure_over_https_and_behind_a_trusted_proxy(services, directory):
    token = audit_token(directory)
    direct = testing.TestClient(create_app(services))
    assert post_sign_in(direct, token, protocol="https").cookies["pmops_console"].secure
    proxied = replace(services, config=replace(services.config, trusted_proxies=("127.0.0.1/32",)))
    behind = testing.TestClient(create_app(proxied))
    forwarded = {"X-Forwarded-Proto": "https"}
    assert post_sign_in(behind, token, headers=forwarded).cookies["pmops_console"].secure
    # An untrusted peer cannot claim https (nor so make the cookie unusable over http).
    assert not post_sign_in(direct, token, headers=forwarded).cookies["pmops_console"].secure


def test_operation_token_and_unknown_token_are_refused(client, directory):
    refused = post_sign_in(client, directory.token)
    assert refused.status_code == 403 and "cannot open the console" in refused.text
    assert "pmops_console" not in refused.cookies
    unknown = post_sign_in(client, "pmo_" + uuid.uuid4().hex + "_nope")
    assert unknown.status_code == 401 and "not valid" in unknown.text
    for result in (refused, unknown):
        assert directory.token not in result.text


def test_audit_token_cannot_call_the_operations(client, directory):
    token = audit_token(directory)
    result = client.simulate_post(
        "/api/v1/ops/people/code",
        json=set_code_body(directory.person_id, code="VC-A"),
        headers=directory.headers(token=token),
    )
    assert result.status_code == 403 and result.json["errors"][0]["code"] == "forbidden"


def test_sign_in_without_its_csrf_cookie_is_refused(client, directory):
    token = audit_token(directory)
    csrf = sign_in_form(client)
    result = client.simulate_post(
        "/console/sign-in", body=f"csrf={csrf}&token={token}", headers=FORM
    )
    assert result.status_code == 403 and "pmops_console" not in result.cookies


def test_posts_without_the_session_csrf_token_are_refused(client, directory):
    cookie = sign_in(client, audit_token(directory))
    started = client.simulate_post(
        "/console/integrity/verify", body="csrf=wrong", headers={**cookie, **FORM}
    )
    assert started.status_code == 403
    page = client.simulate_get("/console/integrity", headers=cookie)
    assert 'id="verify-button"' in page.text and "has not been run" in page.text
    assert client.simulate_post("/console/sign-out", headers=cookie).status_code == 403
    assert client.simulate_get("/console/audit", headers=cookie).status_code == 200


def test_sign_out_ends_the_session(client, directory):
    cookie = sign_in(client, audit_token(directory))
    page = client.simulate_get("/console/audit", headers=cookie)
    out = client.simulate_post(
        "/console/sign-out", body=f"csrf={csrf_of(page.text)}", headers={**cookie, **FORM}
    )
    assert out.status_code == 303 and out.headers["location"].startswith("/console/sign-in")
    again = client.simulate_get("/console/audit", headers=cookie)
    assert again.status_code == 303 and "ended=1" in again.headers["location"]


def test_revoked_or_rotated_token_ends_its_sessions_within_5_seconds(client, directory):
    app = directory.services.app
    for change in (app.revoke_token, app.rotate_token):
        name = f"auditor-{uuid.uuid4().hex[:8]}"
        token = app.issue_token(name, "Audit team", ["audit:read"], [], None, None)
        cookie = sign_in(client, token)
        assert client.simulate_get("/console/audit", headers=cookie).status_code == 200
        change(name)
        changed_at = time.monotonic()
        while client.simulate_get("/console/audit", headers=cookie).status_code == 200:
            assert time.monotonic() - changed_at < 5, f"{change.__name__}: session still open"
            time.sleep(0.25)


def test_idle_session_expires_after_12_hours(client, directory):
    cookie = sign_in(client, audit_token(directory))
    services = directory.services
    with services.app.recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(
            f"UPDATE {services.config.table('ops_console_sessions')} SET last_seen = last_seen - "
            f"{12 * 3600 + 5}"
        )
    result = client.simulate_get("/console/audit", headers=cookie)
    assert result.status_code == 303 and "ended=1" in result.headers["location"]


def test_no_token_in_pages_or_logs_and_requests_logged_with_token_name(client, directory, caplog):
    caplog.set_level(logging.INFO)
    token = audit_token(directory)
    cookie = sign_in(client, token)
    client.simulate_post(
        "/api/v1/ops/people/code",
        json=set_code_body(directory.person_id, code="VC-Log"),
        headers=directory.headers(),
    )
    catch_up(directory)
    name = token_name(directory, token)
    for path in (
        "/console/audit",
        f"/console/people/{directory.person_id}",
        "/console/activity",
        "/console/integrity",
    ):
        page = client.simulate_get(path, headers=cookie)
        assert page.status_code == 200, path
        for secret in (token, token.split("_", 2)[2], directory.token):
            assert secret not in page.text, path
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert token not in logged and token.split("_", 2)[2] not in logged
    assert f"console GET /console/audit -> 200 (token {name})" in logged


def token_name(directory, token: str) -> str:
    found = directory.services.authenticator.authenticate(token)
    assert found is not None
    return found.name


def set_codes(client, directory, count: int, workflow: str = "Spring campaign") -> None:
    for n in range(count):
        result = client.simulate_post(
            "/api/v1/ops/people/code",
            json=set_code_body(directory.person_id, code=f"VC-{n}"),
            headers=directory.headers(key=uuid.uuid4().hex, **{"X-Ops-Workflow": workflow}),
        )
        assert result.status_code == 200


def positions(text: str) -> list[int]:
    body = text.split('<table class="data" id="audit-table">', 1)[1]
    return [int(p) for p in re.findall(r'<td class="num">(\d+)</td>', body)]


def test_audit_pages_by_keyset_newest_first(client, directory):
    set_codes(client, directory, 55)
    catch_up(directory)
    cookie = sign_in(client, audit_token(directory))
    query = f"person={directory.person_id}&operation=set-code"
    first = client.simulate_get("/console/audit", query_string=query, headers=cookie)
    newest = positions(first.text)
    assert len(newest) == 50 and newest == sorted(newest, reverse=True)
    older_link = re.search(r'href="/console/audit\?([^"]+)" rel="next"', first.text).group(1)
    assert f"before={newest[-1]}" in older_link.replace("&amp;", "&")
    second = client.simulate_get(
        "/console/audit", query_string=older_link.replace("&amp;", "&"), headers=cookie
    )
    oldest = positions(second.text)
    assert len(oldest) == 5 and max(oldest) < min(newest) and 'rel="next"' not in second.text
    newer_link = re.search(r'href="/console/audit\?([^"]+)" rel="prev"', second.text).group(1)
    back = client.simulate_get(
        "/console/audit", query_string=newer_link.replace("&amp;", "&"), headers=cookie
    )
    assert positions(back.text) == newest


def test_downloads_hold_exactly_the_filtered_entries(client, directory):
    set_codes(client, directory, 3, workflow="Wanted")
    set_codes(client, directory, 2, workflow="Other")
    catch_up(directory)
    cookie = sign_in(client, audit_token(directory))
    query = "workflow=wanted"  # any case, as the CLI
    as_json = client.simulate_get("/console/audit.json", query_string=query, headers=cookie)
    assert as_json.status_code == 200 and "attachment" in as_json.headers["content-disposition"]
    entries = orjson.loads(as_json.content)
    assert [e["workflow"] for e in entries] == ["Wanted"] * 3
    as_csv = client.simulate_get("/console/audit.csv", query_string=query, headers=cookie)
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["position"]) for r in rows] == [e["position"] for e in entries]
    assert [r["new_value"] for r in rows] == ["VC-0", "VC-1", "VC-2"]
    page = client.simulate_get("/console/audit", query_string=query, headers=cookie)
    assert sorted(positions(page.text)) == [e["position"] for e in entries]


def test_bad_filters_are_explained_not_crashed(client, directory):
    cookie = sign_in(client, audit_token(directory))
    result = client.simulate_get(
        "/console/audit", query_string="person=abc&since=yesterday", headers=cookie
    )
    assert result.status_code == 400
    assert "Enter a whole number" in result.text and "Enter a time like" in result.text
    assert client.simulate_get("/console/people/999999999999", headers=cookie).status_code == 404


def test_activity_counts_calls_and_lists_refusals_with_detail(client, directory):
    set_codes(client, directory, 2, workflow="Noisy")
    refused = client.simulate_post(
        "/api/v1/ops/people/code",
        json=set_code_body(directory.person_id, code=" padded "),
        headers=directory.headers(**{"X-Ops-Workflow": "Noisy"}),
    )
    assert refused.status_code == 422
    catch_up(directory)
    cookie = sign_in(client, audit_token(directory))
    page = client.simulate_get("/console/activity", query_string="by=workflow", headers=cookie)
    assert page.status_code == 200 and "<svg" in page.text
    totals = page.text.split('id="activity-totals"', 1)[1].split("</table>", 1)[0]
    assert re.search(
        r"Noisy</th><td class=\"num\">2</td><td class=\"num\">0</td>"
        r"<td class=\"num\">1</td><td class=\"num\">3</td>",
        totals,
    )
    refusals = page.text.split('id="refused-table"', 1)[1]
    assert refused.json["errors"][0]["detail"].split("(")[0].strip()[:30] in refusals.replace(
        "&#39;", "'"
    ).replace("&#34;", '"')


def test_verify_runs_in_the_background_and_keeps_its_result(client, directory):
    set_codes(client, directory, 2)
    catch_up(directory)
    cookie = sign_in(client, audit_token(directory))
    page = client.simulate_get("/console/integrity", headers=cookie)
    started = client.simulate_post(
        "/console/integrity/verify", body=f"csrf={csrf_of(page.text)}", headers={**cookie, **FORM}
    )
    assert started.status_code == 303
    run = re.search(r"run=([0-9a-f]+)", started.headers["location"]).group(1)
    deadline = time.monotonic() + 20
    while not (
        progress := client.simulate_get(f"/console/integrity/verify/{run}", headers=cookie)
    ).json["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert progress.json["ok"] is True and progress.json["step"] == progress.json["steps"]
    page = client.simulate_get("/console/integrity", headers=cookie)
    assert "OK — the projections match the log" in page.text and "started by" in page.text


def test_tokens_issue_defaults_to_the_operation_scopes_and_issues_audit_tokens(config, services):
    from click.testing import CliRunner

    from api.cli import cli
    from api.cli import tokens as tokens_cli

    tokens_cli.register(cli)

    def issue(*scope: str) -> list[str]:
        name = f"cli-{uuid.uuid4().hex[:8]}"
        result = CliRunner().invoke(
            cli,
            [
                "--database-url",
                config.database_url,
                "tokens",
                "issue",
                "--name",
                name,
                "--actor",
                "Audit",
                *scope,
            ],
        )
        assert result.exit_code == 0, result.output
        token = services.authenticator.authenticate(result.stdout.strip().splitlines()[-1])
        assert token is not None
        return token.scopes

    assert issue() == ["community:add", "code:set"]
    assert issue("--scope", "audit:read") == ["audit:read"]


def test_activity_projection_rebuilds_from_the_log(client, directory):
    from projections import rebuild

    set_codes(client, directory, 3)
    catch_up(directory)
    cookie = sign_in(client, audit_token(directory))

    def totals() -> str:
        page = client.simulate_get("/console/activity", headers=cookie)
        return page.text.split('id="activity-totals"', 1)[1].split("</table>", 1)[0]

    before = totals()
    assert '<td class="num">3</td>' in before
    services = directory.services
    assert rebuild(services.app, services.config, "activity") == (
        services.app.recorder.max_notification_id()
    )
    assert totals() == before
