"""The console's pages: a few lines each; reads are in reads.py, sessions in auth.py."""

import csv
import hmac
import io
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import falcon
import orjson

from api.console import forms
from api.console.auth import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Auth,
    Viewer,
    is_https,
)
from api.console.chart import build_chart
from api.console.reads import Reads
from api.console.render import render
from api.console.store import ConsoleStore
from api.console.verify_job import progress, start_verify
from commands.documents import Problem
from projections.activity import DIMENSIONS
from projections.audit import AUDIT_COLUMNS
from projections.proofs import ProofUnavailable
from projections.times import iso

log = logging.getLogger("pm_ops.console")

MAX_FORM_BYTES = 8 * 1024
PAGE_SIZE = 50
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Console:
    """What every page needs."""

    reads: Reads
    store: ConsoleStore
    auth: Auth
    trusted_proxies: tuple[str, ...]

    def set_cookie(self, req: falcon.Request, resp: falcon.Response, name: str, value: str) -> None:
        resp.set_cookie(
            name,
            value,
            path=COOKIE_PATH,
            secure=is_https(req, self.trusted_proxies),
            http_only=True,
            same_site="Strict",
        )


class Page:
    """A console resource; unless `public`, only a signed-in auditor reaches it."""

    public = False

    def __init__(self, console: Console) -> None:
        self.console = console


def viewer_of(req: falcon.Request) -> Viewer:
    viewer = req.context.get("viewer")
    assert viewer is not None, "the guard lets no one in without a session"
    return viewer


def form_of(req: falcon.Request) -> dict[str, str]:
    if req.content_length is not None and req.content_length > MAX_FORM_BYTES:
        raise falcon.HTTPContentTooLarge(description="The form is too large.")
    try:
        media = req.get_media()
    except falcon.MediaNotFoundError:
        return {}
    except falcon.HTTPError:
        return {}
    if not isinstance(media, dict):
        return {}
    return {k: v if isinstance(v, str) else "" for k, v in media.items()}


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def safe_next(target: str | None) -> str:
    """Only a console page may follow sign-in (never another site)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console/audit"


def refuse_form(resp: falcon.Response) -> None:
    render(
        resp,
        "error.html",
        403,
        title="Form expired",
        message="This form has expired or did not come from this console. "
        "Reload the page and try again.",
        viewer=None,
    )


# --- signing in and out ------------------------------------------------------------


class SignInPage(Page):
    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._form(req, resp, 200, _sign_in_message(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = form_of(req)
        if not same(form.get("csrf"), req.cookies.get(SIGN_IN_COOKIE)):
            log.info("console sign-in refused: the form's CSRF value did not match")
            self._form(req, resp, 403, "The sign-in form expired. Paste the token again.")
            return
        presented = form.get("token", "")
        if not presented.strip():
            self._form(req, resp, 400, "Paste your audit token into the field.")
            return
        try:
            session_id, token = self.console.auth.sign_in(presented, req.context.client_address)
        except Problem as refused:
            log.info("console sign-in refused (%s)", refused.status)
            self._form(req, resp, refused.status, refused.detail)
            return
        log.info("console sign-in: token %s", token.name)
        self.console.set_cookie(req, resp, SESSION_COOKIE, session_id)
        resp.unset_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH, same_site="Strict")
        raise falcon.HTTPSeeOther(safe_next(form.get("next")))

    def _form(self, req: falcon.Request, resp: falcon.Response, status: int, message: str) -> None:
        csrf = secrets.token_urlsafe(24)
        self.console.set_cookie(req, resp, SIGN_IN_COOKIE, csrf)
        next_page = safe_next(req.get_param("next") or form_of(req).get("next"))
        render(
            resp,
            "sign_in.html",
            status,
            title="Sign in",
            csrf=csrf,
            next=next_page,
            message=message,
            viewer=None,
        )


def _sign_in_message(req: falcon.Request) -> str:
    if req.get_param("ended"):
        return (
            "Your session has ended (signed out elsewhere, idle for 12 hours, or the token "
            "was revoked or rotated). Sign in again."
        )
    if req.get_param("signed_out"):
        return "You are signed out."
    return ""


class SignOutPage(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = viewer_of(req)
        if not same(form_of(req).get("csrf"), viewer.csrf):
            refuse_form(resp)
            return
        self.console.auth.sign_out(viewer.session_id)
        resp.unset_cookie(SESSION_COOKIE, path=COOKIE_PATH, same_site="Strict")
        raise falcon.HTTPSeeOther("/console/sign-in?signed_out=1")


class HomePage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPSeeOther("/console/audit")


# --- the audit trail ---------------------------------------------------------------


class AuditPage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raw = forms.raw_filters(req)
        filters, errors = forms.parse_filters(raw)
        page = None
        if not errors:
            page = self.console.reads.audit_page(
                filters,
                before=forms.positive_int(req, "before"),
                after=forms.positive_int(req, "after"),
                limit=PAGE_SIZE,
            )
        render(
            resp,
            "audit.html",
            400 if errors else 200,
            title="Audit trail",
            viewer=viewer_of(req),
            raw=raw,
            errors=errors,
            page=page,
            operations=forms.OPERATIONS,
            query=forms.query,
            filtered=bool(raw),
            proofs=self.console.reads.proof_coverage(),
        )


def _csv_cell(value: Any) -> str:
    """A cell as text; one that a spreadsheet would run as a formula is quoted with '."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(CSV_TRIGGERS) else text


def _csv(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(AUDIT_COLUMNS)
    for count, row in enumerate(rows, 1):
        writer.writerow([_csv_cell(row[c]) for c in AUDIT_COLUMNS])
        if count % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _json(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    yield b"["
    for count, row in enumerate(rows):
        yield (b",\n" if count else b"\n") + orjson.dumps(row)
    yield b"\n]\n"


class AuditExport(Page):
    """Exactly the filtered set, in log order, streamed (it may be large)."""

    def __init__(self, console: Console, fmt: str) -> None:
        super().__init__(console)
        self.fmt = fmt

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        filters, errors = forms.parse_filters(forms.raw_filters(req))
        if errors:
            render(
                resp,
                "error.html",
                400,
                title="Cannot download",
                message="The filters are not valid: " + " ".join(errors.values()),
                viewer=viewer_of(req),
            )
            return
        rows = self.console.reads.audit_export(filters)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        resp.downloadable_as = f"audit-{stamp}.{self.fmt}"
        if self.fmt == "csv":
            resp.content_type = "text/csv; charset=utf-8"
            resp.stream = _csv(rows)
        else:
            resp.content_type = "application/json"
            resp.stream = _json(rows)


# --- a person ----------------------------------------------------------------------


class PersonLookup(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        person = forms.positive_int(req, "person")
        if person is None:
            render(
                resp,
                "error.html",
                400,
                title="Which person?",
                message="Enter a Play Money person ID (a whole number).",
                viewer=viewer_of(req),
            )
            return
        raise falcon.HTTPSeeOther(f"/console/people/{person}")


class PersonPage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response, person_id: int) -> None:
        reads = self.console.reads
        history = reads.history(person_id)
        now = reads.person_now(person_id)
        viewer = viewer_of(req)
        if not history and now is None:
            render(
                resp,
                "error.html",
                404,
                title="No such person",
                message=f"No person with Play Money ID {person_id} in the log.",
                viewer=viewer,
            )
            return
        as_of_text = (req.get_param("as_of") or "").strip()[:40]
        as_of, as_of_error, past = None, "", None
        if as_of_text:
            try:
                as_of = forms.parse_moment(as_of_text)
                past = reads.as_of(person_id, as_of)
            except ValueError:
                as_of_error = "Enter a time like 2026-03-01T14:30 (UTC)."
        render(
            resp,
            "person.html",
            400 if as_of_error else 200,
            title=f"Person {person_id}",
            viewer=viewer,
            person_id=person_id,
            now=now,
            history=history,
            as_of_text=as_of_text,
            as_of=iso(as_of) if as_of else None,
            as_of_error=as_of_error,
            past=past,
            proofs=reads.proof_coverage(),
        )


# --- activity -----------------------------------------------------------------------


class ActivityPage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        by = req.get_param("by") or "outcome"
        if by not in DIMENSIONS:
            by = "outcome"
        activity = self.console.reads.activity(by, datetime.now(UTC))
        render(
            resp,
            "activity.html",
            title="Activity",
            viewer=viewer_of(req),
            by=by,
            dimensions=DIMENSIONS,
            activity=activity,
            chart=build_chart(activity.hours, activity.counts, by),
        )


# --- integrity ----------------------------------------------------------------------


class IntegrityPage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        store = self.console.store
        latest = store.latest_run()
        last = store.latest_finished_run()
        if latest is not None and last is not None and latest.id == last.id:
            latest = last  # it finished between the two reads
        integrity = self.console.reads.integrity()
        render(
            resp,
            "integrity.html",
            title="Integrity",
            viewer=viewer_of(req),
            integrity=integrity,
            checkpoints=self.console.reads.checkpoints(integrity.projections),
            running=latest if latest is not None and latest.running else None,
            progress=progress(latest) if latest is not None else None,
            last=last,
            when=_epoch_iso,
        )


def _epoch_iso(seconds: float | None) -> str | None:
    return None if seconds is None else iso(datetime.fromtimestamp(seconds, UTC))


class VerifyStart(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = viewer_of(req)
        if not same(form_of(req).get("csrf"), viewer.csrf):
            refuse_form(resp)
            return
        run = start_verify(self.console.store, self.console.reads, viewer.token_name)
        raise falcon.HTTPSeeOther(f"/console/integrity?{urlencode({'run': run.id})}#verify")


class VerifyProgress(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response, run_id: str) -> None:
        run = self.console.store.run(run_id[:64])
        if run is None:
            raise falcon.HTTPNotFound(description="No such verify run.")
        resp.media = progress(run)


# --- signed checkpoints: proofs to download -------------------------------------------


class ProofDownload(Page):
    """`/console/proof?position=P[&size=N]`: the JSON of `pm-ops checkpoints prove`."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        position = forms.positive_int(req, "position")
        size = forms.positive_int(req, "size")
        if position is None or (req.get_param("size") is not None and size is None):
            render(
                resp,
                "error.html",
                400,
                title="Which entry?",
                message="A proof is asked for by the entry's log position, a whole number "
                "(and, optionally, the size of a signed checkpoint), "
                "as the links of the audit trail do.",
                viewer=viewer_of(req),
            )
            return
        try:
            document = self.console.reads.inclusion_proof(position, size)
        except ProofUnavailable as unavailable:
            reason = str(unavailable)
            render(
                resp,
                "error.html",
                404,
                title="No proof yet",
                message=f"No inclusion proof for position {position}: {reason}.",
                viewer=viewer_of(req),
            )
            return
        resp.content_type = "application/json"
        resp.downloadable_as = f"proof-position-{position}-size-{document['tree_size']}.json"
        resp.data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


class VerifierScript(Page):
    """The standalone verifier (projections/transparency.py) as installed, to download."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/x-python; charset=utf-8"
        resp.downloadable_as = "transparency.py"
        resp.data = self.console.reads.verifier_script()


def not_found(req: falcon.Request, resp: falcon.Response, **_: Any) -> None:
    """Any other /console/... address: a page, not the API's JSON error."""
    render(
        resp,
        "error.html",
        404,
        title="No such page",
        message="There is no console page at this address.",
        viewer=None,
    )
