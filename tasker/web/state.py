"""What every handler of the dashboard shares: the `Dashboard` (the tasker app,
snapshots, templates, guard) and small helpers to render, answer with an
ETag, and check a topic filter."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from tasker.text import printable
from tasker.web import views
from tasker.web.guard import Guard
from tasker.web.live import Snapshots
from tasker.web.params import BadRequest
from tasker.web.views import TaskFilter

if TYPE_CHECKING:
    from tasker.app import Tasker


@dataclass
class Dashboard:
    """The dashboard's dependencies, kept on the Starlette app's state."""

    app: Tasker
    snapshots: Snapshots
    templates: Jinja2Templates
    allow_actions: bool
    guard: Guard | None


def dash(request: Request) -> Dashboard:
    return request.app.state.dash  # type: ignore[no-any-return]


def root(request: Request) -> str:
    """Where the dashboard is mounted ("" at the top, e.g. "/ops" under a
    host app): every link, form, redirect and asset starts with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def route_path(request: Request) -> str:
    """The request's path within the dashboard (without `root`)."""
    path, prefix = request.url.path, root(request)
    return (path[len(prefix):] or "/") if prefix and path.startswith(prefix) else path


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 to `path` of the dashboard, wherever it is mounted."""
    return RedirectResponse(root(request) + path, status_code=303)


def render(
    request: Request, name: str, context: dict[str, Any], status: int = 200, **headers: str
) -> HTMLResponse:
    """A template with what every page needs (actions allowed, signed in, csrf)."""
    d = dash(request)
    signed_in = d.guard is not None and d.guard.signed_in(request)
    base = {
        "allow_actions": d.allow_actions,
        "signed_in": signed_in,
        "csrf": d.guard.csrf_value if d.guard is not None and signed_in else "",
        "path": route_path(request),
        "root": root(request),
    }
    return d.templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=headers or None
    )


def not_modified(request: Request, etag: str) -> Response | None:
    """304 when the browser already holds this version (its If-None-Match)."""
    quoted = f'"{etag}"'
    if quoted in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": quoted, "Cache-Control": "no-cache"})
    return None


def with_etag(response: Response, etag: str) -> Response:
    """Let the browser revalidate instead of refetching (no-cache + ETag)."""
    response.headers["ETag"] = f'"{etag}"'
    response.headers["Cache-Control"] = "no-cache"
    return response


def check_topic(d: Dashboard, f: TaskFilter) -> None:
    """400 for a topic no task has (a typo, or text that is no topic at all)."""
    if f.topic is None or f.topic in d.snapshots.current.data["status"]["counts"]:
        return
    if not views.topic_exists(d.app, f.topic):
        shown = f.topic if len(f.topic) <= 40 else f.topic[:40] + "..."
        raise BadRequest(f"topic: no task has topic {shown!r}")


# --- template filters ---------------------------------------------------------------


def fmt_time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def fmt_ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def fmt_secs(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 600:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} d"


def fmt_json(text: str | None) -> str:
    """JSON text indented for reading; anything that is not JSON as it is."""
    if text is None:
        return "-"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


def fmt_num(n: int) -> str:
    return f"{n:,}"


MARKS = {"~": "\u2248", ">=": "\u2265"}  # shown before a count: approximately / at least


def fmt_mark(mark: str | None) -> str:
    return MARKS.get(mark or "", "")


def shown(value: Any) -> Any:
    """Every value a page prints (jinja's `finalize`): text with its control
    characters and bidi controls escaped (`text.printable`; newlines and
    tabs kept for the logs), before autoescaping makes it HTML."""
    if isinstance(value, Markup):
        return Markup(printable(str(value), keep="\n\t"))
    if isinstance(value, str):
        return printable(value, keep="\n\t")
    return value


FILTERS = {
    "time": fmt_time,
    "ago": fmt_ago,
    "secs": fmt_secs,
    "pretty_json": fmt_json,
    "num": fmt_num,
    "mark": fmt_mark,
}
