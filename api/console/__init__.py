"""The auditors' console at /console: read-only pages for `audit:read` tokens.

`mount(app, services)` adds the routes, the static files and the guard that lets
only a signed-in auditor through, sets the pages' security headers and logs every
console request with the token's name (never its value)."""

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import falcon

from api.bootstrap import Services
from api.console import pages
from api.console.auth import COOKIE_PATH, SESSION_COOKIE, Auth
from api.console.reads import Reads
from api.console.store import ConsoleStore
from commands.library_internals import datastore_of

log = logging.getLogger("pm_ops.console")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def console_store(services: Services) -> ConsoleStore:
    return ConsoleStore(datastore_of(services.app.recorder), services.config.store)


class ConsoleGuard:
    """Sessions for console pages; headers and a log line for every console request."""

    def __init__(self, console: pages.Console) -> None:
        self._console = console

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if not isinstance(resource, pages.Page) or resource.public:
            return
        session_id = req.cookies.get(SESSION_COOKIE)
        viewer = None
        if session_id:
            viewer = self._console.auth.viewer(session_id, req.context.client_address)
        if viewer is None:
            query = {"next": req.relative_uri if req.method == "GET" else "/console/audit"}
            if session_id:
                query["ended"] = "1"
                resp.unset_cookie(SESSION_COOKIE, path=COOKIE_PATH, same_site="Strict")
            raise falcon.HTTPSeeOther(f"/console/sign-in?{urlencode(query)}")
        req.context.viewer = viewer

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if not req.path.startswith("/console"):
            return
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)
        if not req.path.startswith("/console/static/"):
            resp.set_header("Cache-Control", "no-store")
        viewer = req.context.get("viewer")
        log.info(
            "console %s %s -> %s (token %s)",
            req.method,
            req.path,
            resp.status_code,
            viewer.token_name if viewer else "none",
        )


def mount(app: falcon.App, services: Services) -> None:
    store = console_store(services)
    console = pages.Console(
        Reads(services), store, Auth(services.authenticator, store), services.config.trusted_proxies
    )
    app.add_middleware(ConsoleGuard(console))
    routes: dict[str, pages.Page] = {
        "/console": pages.HomePage(console),
        "/console/sign-in": pages.SignInPage(console),
        "/console/sign-out": pages.SignOutPage(console),
        "/console/audit": pages.AuditPage(console),
        "/console/audit.csv": pages.AuditExport(console, "csv"),
        "/console/audit.json": pages.AuditExport(console, "json"),
        "/console/people": pages.PersonLookup(console),
        "/console/people/{person_id:int(min=1)}": pages.PersonPage(console),
        "/console/activity": pages.ActivityPage(console),
        "/console/integrity": pages.IntegrityPage(console),
        "/console/integrity/verify": pages.VerifyStart(console),
        "/console/integrity/verify/{run_id}": pages.VerifyProgress(console),
        "/console/proof": pages.ProofDownload(console),
        "/console/checkpoints/transparency.py": pages.VerifierScript(console),
    }
    for path, resource in routes.items():
        app.add_route(path, resource)
    app.add_static_route("/console/static", Path(__file__).parent / "static")
    app.add_sink(pages.not_found, r"^/console/(?!static/)")
