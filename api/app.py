"""The Falcon app factory (asgilook style): collaborators in, app out."""

import logging
from typing import Any

import falcon
import orjson
from eventsourcing.persistence import PersistenceError

from api.bootstrap import Services
from api.console import mount as mount_console
from api.gate import Gate, client_address
from api.openapi import openapi_document
from api.resources import (
    JSONAPI,
    HealthResource,
    MetricsResource,
    OpenApiResource,
    OperationResource,
    ReadyResource,
    request_id,
)
from commands.documents import Problem
from commands.group_commit import GroupCommitter, Unavailable
from commands.messages import RecordRejection
from commands.operations import OPERATIONS

log = logging.getLogger("pm_ops.api")


class RequestContext:
    """Stamps a request id and the caller's address; counts every response by route and status."""

    def __init__(self, services: Services) -> None:
        self._metrics = services.metrics
        self._trusted_proxies = services.config.trusted_proxies
        # Each (route, status) counter, once looked up: labels() takes a lock and builds
        # its key every time. Routes and statuses are few, so this stays small.
        self._counters: dict[tuple[str, int], Any] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = request_id(req)
        req.context.client_address = client_address(req, self._trusted_proxies)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        resp.set_header("X-Request-Id", req.context.get("request_id", ""))
        labels = (req.uri_template or "unmatched", resp.status_code)
        counter = self._counters.get(labels)
        if counter is None:
            counter = self._counters[labels] = self._metrics.request_counter(*labels)
        counter.inc()
        if resp.status_code >= 400:
            log.info("%s %s -> %s", req.method, req.path, resp.status_code)


def render_problem(
    req: falcon.Request, resp: falcon.Response, problem: Problem, _params: Any
) -> None:
    resp.status = problem.status
    resp.content_type = JSONAPI
    resp.data = problem.document()
    for name, value in problem.headers:
        resp.set_header(name, value)


def problem_renderer(committer: GroupCommitter) -> Any:
    """Render a refusal; one of a call whose caller is known (all but 401), except 429,
    is also recorded as a RejectedCall, so the feed shows a misbehaving workflow (SPEC §2)."""

    def render_refusal(
        req: falcon.Request, resp: falcon.Response, problem: Problem, params: Any
    ) -> None:
        if problem.context is not None and problem.operation and problem.status != 429:
            committer.submit(
                RecordRejection(
                    problem.context, problem.operation, problem.status, problem.code, problem.detail
                )
            )
        render_problem(req, resp, problem, params)

    return render_refusal


def render_http_error(
    req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError, _params: Any
) -> None:
    status = error.status_code
    phrase = str(error.title or status).removeprefix(f"{status} ")
    operations = " and ".join(f"POST {op.path}" for op in OPERATIONS)
    default_detail = {
        404: f"There is nothing at this URL. The operations are {operations}.",
        405: f"{req.method} is not allowed on {req.path[:100]}. The operations take POST; "
        "/healthz, /readyz, /openapi.json and /metrics take GET.",
    }.get(status, phrase)
    problem = Problem(
        status,
        error.code or phrase.lower().replace(" ", "_"),
        phrase,
        str(error.description or default_detail),
    )
    render_problem(req, resp, problem, _params)
    for name, value in (error.headers or {}).items():
        resp.set_header(name, value)


UNAVAILABLE = Problem(
    503,
    "unavailable",
    "Temporarily unavailable",
    "The ops store is temporarily unreachable. Retry later with the same idempotency key; "
    "if it persists, tell engineering.",
    headers=(("Retry-After", "1"),),
)


def render_unavailable(
    req: falcon.Request, resp: falcon.Response, error: Exception, _params: Any
) -> None:
    log.warning("store unavailable: %s", type(error).__name__)
    render_problem(req, resp, UNAVAILABLE, _params)


def render_unexpected(
    req: falcon.Request, resp: falcon.Response, error: Exception, _params: Any
) -> None:
    log.exception("unexpected error on %s %s", req.method, req.path, exc_info=error)
    problem = Problem(
        500,
        "internal_error",
        "Internal error",
        "Something went wrong on our side; nothing is lost if you retry with the same "
        f"idempotency key. Tell engineering (request id {req.context.get('request_id', '?')}).",
    )
    render_problem(req, resp, problem, _params)


def create_app(services: Services) -> falcon.App:
    app = falcon.App(middleware=[RequestContext(services)], cors_enable=False)
    json_handler = falcon.media.JSONHandler(
        dumps=lambda o: orjson.dumps(o).decode(), loads=orjson.loads
    )
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.req_options.strip_url_path_trailing_slash = True  # a pasted URL may end in "/"

    gate = Gate(
        services.authenticator, services.rate_limiter, services.config.rate_limit_per_minute
    )
    for operation in OPERATIONS:
        app.add_route(
            operation.path, OperationResource(operation, gate, services.committer, services.metrics)
        )
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(services.app.recorder.max_notification_id))
    app.add_route("/openapi.json", OpenApiResource(openapi_document(services.config.public_url)))
    app.add_route("/metrics", MetricsResource(services.metrics))
    mount_console(app, services)  # the auditors' console at /console

    # Falcon picks the most specific handler by exception class.
    app.add_error_handler(Exception, render_unexpected)
    app.add_error_handler(falcon.HTTPError, render_http_error)
    app.add_error_handler(PersistenceError, render_unavailable)
    app.add_error_handler(Unavailable, render_unavailable)
    app.add_error_handler(Problem, problem_renderer(services.committer))
    return app
