"""Actions, mounted only with `--allow-actions`: retry, cancel, bulk retry of
the filtered set, purge by age, pause and resume a topic; as forms (signed
in, same origin, csrf) and as JSON (bearer token, same origin). Each goes
through `tasker.admin`."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tasker import admin, topics
from tasker.exceptions import DatabaseError
from tasker.web import params, views
from tasker.web.api import json_response
from tasker.web.guard import SESSION_COOKIE, Refused
from tasker.web.state import Dashboard, check_topic, dash, redirect, render, root

log = logging.getLogger(__name__)

_FORM_ONLY = frozenset({"csrf"})
_DONE = {"retry": "retried", "cancel": "cancelled"}


async def _form(request: Request) -> dict[str, str]:
    """The form's fields after the origin and session checks."""
    d = dash(request)
    assert d.guard is not None  # actions are mounted only with a guard
    d.guard.check_origin(request)
    form = await request.form()
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    d.guard.check_form(request, fields.get("csrf", ""))
    return {k: v for k, v in fields.items() if k not in _FORM_ONLY}


async def _json(request: Request) -> Any:
    d = dash(request)
    assert d.guard is not None
    d.guard.check_origin(request)
    d.guard.check_bearer(request)
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise params.BadRequest("the body is not valid JSON") from None


def _task_id(request: Request) -> int:
    return params.parse_int("id", request.path_params["task_id"]) or 0


def _one(d: Dashboard, task_id: int, verb: str) -> dict[str, Any]:
    """Retry or cancel one task; 409 (Refused) when its status does not allow
    it, or (retry) when a live task holds its unique key, naming that task."""
    row = admin.get_task(d.app, task_id)  # TaskNotFound -> 404
    moved = admin.retry(d.app, [task_id]) if verb == "retry" else admin.cancel(d.app, [task_id])
    if not moved and verb == "retry":
        holder = admin.retry_blocked(d.app, [task_id]).get(task_id)
        if holder is not None:
            raise Refused(
                409, f"task {task_id} was not retried: task {holder} holds its unique key"
            )
    if not moved:
        need = "failed or success" if verb == "retry" else "pending, retry or running"
        raise Refused(
            409, f"task {task_id} is {row['status']}: only {need} tasks can be {_DONE[verb]}"
        )
    return {_DONE[verb]: moved, "count": len(moved)}


def _shown(topic: str) -> str:
    return repr(topic if len(topic) <= 40 else topic[:40] + "...")


def _known_topic(d: Dashboard, topic: str) -> str:
    """`topic` when it may be paused or resumed: 400 when it cannot be a topic
    (`topics.topic_problem`), 404 when no task, pause or instance has it."""
    problem = topics.topic_problem(topic)
    if problem is not None:
        raise params.BadRequest(f"topic {problem}")
    data = d.snapshots.current.data
    if topic in data["status"]["counts"] or topic in data["status"]["paused"]:
        return topic
    if not views.topic_known(d.app, topic):
        raise HTTPException(404, f"no task, pause or instance has topic {_shown(topic)}")
    return topic


def _set_paused(d: Dashboard, topic: str, paused: bool) -> dict[str, Any]:
    """Pause or resume a known topic, then read the snapshot again so the
    next page shows the change; answers {"topic": name, "paused": bool}."""
    topic = _known_topic(d, topic)
    if paused:
        admin.pause(d.app, topic)
    else:
        admin.resume(d.app, topic)
    try:
        d.snapshots.run_once()
    except DatabaseError as exc:  # done already: the next background read shows it
        log.warning(
            "dashboard: snapshot read after %s failed: %s", "pause" if paused else "resume", exc
        )
    return {"topic": topic, "paused": paused}


# --- signing in ---------------------------------------------------------------------


def login_page(request: Request) -> Response:
    return render(request, "login.html", {"error": None})


async def login(request: Request) -> Response:
    d = dash(request)
    assert d.guard is not None
    d.guard.check_origin(request)
    form = await request.form()
    token = form.get("token")
    if not isinstance(token, str) or not d.guard.token_matches(token.strip()):
        return render(request, "login.html", {"error": "wrong token"}, status=401)
    response = redirect(request, "/")
    response.set_cookie(
        SESSION_COOKIE, d.guard.session_value, httponly=True, samesite="strict",
        path=root(request) or "/",
    )
    return response


async def logout(request: Request) -> Response:
    await _form(request)
    response = redirect(request, "/")
    response.delete_cookie(SESSION_COOKIE, path=root(request) or "/")
    return response


# --- forms ----------------------------------------------------------------------------


async def retry_form(request: Request) -> Response:
    await _form(request)
    task_id = _task_id(request)
    _one(dash(request), task_id, "retry")
    return redirect(request, f"/tasks/{task_id}")


async def cancel_form(request: Request) -> Response:
    await _form(request)
    task_id = _task_id(request)
    _one(dash(request), task_id, "cancel")
    return redirect(request, f"/tasks/{task_id}")


def bulk_confirm(request: Request) -> Response:
    """How many tasks the filter matches now, and a button to retry them."""
    d = dash(request)
    query = params.parse_filter(request.query_params.multi_items())
    check_topic(d, query.filter)
    n = views.count_retry_matching(d.app, query.filter)
    return render(
        request,
        "confirm.html",
        {
            "what": f"Retry {n} task(s) matching this filter?",
            "n": n,
            "action": "/tasks/retry",
            "fields": query.filter_values(),
            "back": "/tasks?" + urlencode(query.filter_values()),
        },
    )


async def bulk_retry(request: Request) -> Response:
    fields = await _form(request)
    d = dash(request)
    query = params.parse_filter(fields.items())
    check_topic(d, query.filter)
    moved = views.retry_matching(d.app, query.filter)
    back = "/tasks?" + urlencode(query.filter_values())
    return render(request, "done.html", {"message": f"Retried {len(moved)} task(s).", "back": back})


def purge_confirm(request: Request) -> Response:
    d = dash(request)
    older_than, statuses = params.parse_purge(request.query_params.multi_items())
    n = admin.count_purge(d.app, older_than, statuses)
    fields = {"older_than": request.query_params["older_than"]}
    fields["status"] = ",".join(s.value for s in statuses)
    return render(
        request,
        "confirm.html",
        {
            "what": f"Delete {n} {fields['status']} task(s) finished more than "
            f"{fields['older_than']} ago?",
            "n": n,
            "action": "/purge",
            "fields": fields,
            "back": "/tasks",
        },
    )


async def purge(request: Request) -> Response:
    fields = await _form(request)
    older_than, statuses = params.parse_purge(fields.items())
    n = admin.purge(dash(request).app, older_than, statuses)
    return render(request, "done.html", {"message": f"Purged {n} task(s).", "back": "/tasks"})


async def pause_form(request: Request) -> Response:
    """Field `topic` (a form field, not the path: a topic like ".." would not
    survive a browser's path normalisation); back to /topics."""
    fields = await _form(request)
    _set_paused(dash(request), fields.get("topic", ""), True)
    return redirect(request, "/topics")


async def resume_form(request: Request) -> Response:
    fields = await _form(request)
    _set_paused(dash(request), fields.get("topic", ""), False)
    return redirect(request, "/topics")


# --- JSON -------------------------------------------------------------------------------


async def api_retry(request: Request) -> Response:
    await _json(request)
    return json_response(_one(dash(request), _task_id(request), "retry"))


async def api_cancel(request: Request) -> Response:
    await _json(request)
    return json_response(_one(dash(request), _task_id(request), "cancel"))


async def api_bulk_retry(request: Request) -> Response:
    """Body: the filter as JSON (topic, status, since, until, q), plus
    "dry_run": true to only count. Answers {"count": n}."""
    body = await _json(request)
    items = params.json_items(body)
    dry_run = dict(items).get("dry_run") is True
    query = params.parse_filter((k, v) for k, v in items if k != "dry_run")
    d = dash(request)
    check_topic(d, query.filter)
    if dry_run:
        return json_response({"count": views.count_retry_matching(d.app, query.filter)})
    moved = views.retry_matching(d.app, query.filter)
    return json_response({"count": len(moved)})


async def api_purge(request: Request) -> Response:
    """Body: {"older_than": "7d", "status": ["success"]}; answers {"purged": n}."""
    body = await _json(request)
    older_than, statuses = params.parse_purge(params.json_items(body))
    return json_response({"purged": admin.purge(dash(request).app, older_than, statuses)})


async def api_pause(request: Request) -> Response:
    """POST /api/topics/{topic}/pause, the topic percent-encoded (any path
    text: `a/b` may come as `a/b` or `a%2Fb`); answers {"topic", "paused": true}."""
    await _json(request)
    return json_response(_set_paused(dash(request), request.path_params["topic"], True))


async def api_resume(request: Request) -> Response:
    """POST /api/topics/{topic}/resume; answers {"topic", "paused": false}."""
    await _json(request)
    return json_response(_set_paused(dash(request), request.path_params["topic"], False))
