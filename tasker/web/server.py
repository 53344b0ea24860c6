"""The dashboard as an ASGI app: routes, templates, static files, errors.

`create_app` wires the pages, the JSON API and (with `allow_actions`) the
actions around one `Dashboard`. Errors answer briefly and never with a
traceback: bad input 400, refused 401/403/409, unknown task 404, database
unreachable 503, anything else 500 (logged).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasker.exceptions import ConfigurationError, DatabaseError, TaskNotFound
from tasker.web import actions, api, pages, views
from tasker.web.guard import Guard, Refused
from tasker.web.live import Snapshots
from tasker.web.params import BadRequest
from tasker.web.state import FILTERS, Dashboard, render, route_path, shown

if TYPE_CHECKING:
    from tasker.app import Tasker

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
HANDLED = (
    BadRequest,
    ConfigurationError,
    Refused,
    TaskNotFound,
    DatabaseError,
    HTTPException,
    Exception,  # the last resort: Starlette logs it and we answer 500
)


def _routes(allow_actions: bool) -> list[Any]:
    routes: list[Any] = [
        Route("/", pages.overview),
        Route("/tasks", pages.tasks),
        Route("/tasks/{task_id}", pages.task),
        Route("/instances", pages.instances),
        Route("/topics", pages.topics),
        Route("/live/overview", pages.overview_live),
        Route("/live/tasks", pages.tasks_live),
        Route("/live/topics", pages.topics_live),
        Route("/api/status", api.status),
        Route("/api/tasks", api.tasks),
        Route("/api/tasks/{task_id}", api.task),
        Route("/api/instances", api.instances),
        Route("/api/topics", api.topics),
        Mount("/static", StaticFiles(packages=[("tasker.web", "static")]), name="static"),
    ]
    if allow_actions:
        # Listed first: "/tasks/retry" must not be taken for a task id.
        routes[:0] = [
            Route("/login", actions.login_page, methods=["GET"]),
            Route("/login", actions.login, methods=["POST"]),
            Route("/logout", actions.logout, methods=["POST"]),
            Route("/tasks/retry", actions.bulk_confirm, methods=["GET"]),
            Route("/tasks/retry", actions.bulk_retry, methods=["POST"]),
            Route("/tasks/{task_id}/retry", actions.retry_form, methods=["POST"]),
            Route("/tasks/{task_id}/cancel", actions.cancel_form, methods=["POST"]),
            Route("/purge", actions.purge_confirm, methods=["GET"]),
            Route("/purge", actions.purge, methods=["POST"]),
            Route("/api/tasks/retry", actions.api_bulk_retry, methods=["POST"]),
            Route("/api/tasks/purge", actions.api_purge, methods=["POST"]),
            Route("/api/tasks/{task_id}/retry", actions.api_retry, methods=["POST"]),
            Route("/api/tasks/{task_id}/cancel", actions.api_cancel, methods=["POST"]),
            Route("/topics/pause", actions.pause_form, methods=["POST"]),
            Route("/topics/resume", actions.resume_form, methods=["POST"]),
            # `path`: a topic may hold "/"; the action is the last segment.
            Route("/api/topics/{topic:path}/pause", actions.api_pause, methods=["POST"]),
            Route("/api/topics/{topic:path}/resume", actions.api_resume, methods=["POST"]),
        ]
    return routes


def _error(request: Request, status: int, message: str) -> Response:
    if route_path(request).startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    try:
        return render(request, "error.html", {"status": status, "message": message}, status)
    except Exception:  # the error page itself failed: answer plainly
        return Response(message, status_code=status, media_type="text/plain")


async def _on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, (BadRequest, ConfigurationError)):
        return _error(request, 400, str(exc))
    if isinstance(exc, Refused):
        return _error(request, exc.status, str(exc))
    if isinstance(exc, TaskNotFound):
        return _error(request, 404, str(exc))
    if isinstance(exc, HTTPException):
        return _error(request, exc.status_code, exc.detail)
    if isinstance(exc, DatabaseError):
        log.warning("dashboard: database error on %s: %s", request.url.path, exc)
        return _error(request, 503, "the database is unreachable or refused; see the server log")
    log.exception("dashboard: unexpected error on %s", request.url.path)
    return _error(request, 500, "internal error; see the server log")


class NoSniff:
    """Sends `X-Content-Type-Options: nosniff` with every response (pages,
    JSON, static files, errors): a browser must take the declared type, never
    guess HTML from a JSON body that quotes a task's input."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_header)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tasker.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=shown,
    )
    env.filters.update(FILTERS)
    env.tests["datetime"] = lambda v: isinstance(v, dt.datetime)
    return Jinja2Templates(env=env)


def create_app(
    app: Tasker,
    *,
    allow_actions: bool = False,
    token: str | None = None,
    refresh_s: float = 2.0,
    allowed_hosts: Sequence[str] = ("*",),
) -> Starlette:
    """The dashboard of `app` as a Starlette app.

    `token` is required with `allow_actions` (ConfigurationError otherwise).
    The first snapshot is read here: DatabaseError when the database or the
    schema is not there.
    `refresh_s` is the least time between two snapshot reads. `allowed_hosts`
    are the Host headers served (the rest get 400): pass the loopback names
    when bound to loopback, so a page of another site cannot reach the
    dashboard by DNS rebinding.
    """
    if allow_actions and not token:
        raise ConfigurationError("actions need a token")
    rates = views.Throughput()
    snapshots = Snapshots(
        lambda exact: views.overview(app, exact=exact, rates=rates),
        lambda: views.exact_counts(app),
        refresh_s,
    )
    snapshots.run_once()  # a missing schema or database fails here, before serving
    dashboard = Dashboard(
        app=app,
        snapshots=snapshots,
        templates=templates(),
        allow_actions=allow_actions,
        guard=Guard(token) if allow_actions and token else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        snapshots.start()
        try:
            yield
        finally:
            snapshots.stop()

    web = Starlette(
        routes=_routes(allow_actions),
        middleware=[
            Middleware(NoSniff),  # outermost: the Host check's 400 carries it too
            Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)),
        ],
        exception_handlers={e: _on_error for e in HANDLED},
        lifespan=lifespan,
    )
    web.state.dash = dashboard
    return web
