"""The JSON API: the pages' data at /api/..., with the same query parameters.

Reads need no token (as the pages); `actions` adds the POSTs, which do.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from tasker import admin
from tasker.web import params, views
from tasker.web.state import check_topic, dash


def json_response(value: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(admin.to_jsonable(value), status_code=status)


def status(request: Request) -> JSONResponse:
    """`admin.status` plus throughput, from the shared snapshot (see `as_of`).

    A count at the cap is the last whole-table count: `counts_approximate`
    marks it ("~", or ">=" when no whole-table count has reached it yet)
    and `counts_exact_age_s` says how old that count is."""
    snap = dash(request).snapshots.current
    data = snap.data
    return json_response(
        {
            **data["status"],
            "counts_approximate": data["marks"],
            "counts_exact_age_s": data["exact_age_s"],
            "throughput": data["throughput"],
            "as_of": data["as_of"],
        }
    )


def tasks(request: Request) -> JSONResponse:
    """{"tasks": [...], "next_before": id | null}."""
    d = dash(request)
    query = params.parse_task_query(request.query_params.multi_items())
    check_topic(d, query.filter)
    return json_response(
        views.task_page(d.app, query.filter, before=query.before, limit=query.limit)
    )


def task(request: Request) -> JSONResponse:
    task_id = params.parse_int("id", request.path_params["task_id"])
    return json_response(views.task_detail(dash(request).app, task_id or 0))


def instances(request: Request) -> JSONResponse:
    return json_response({"instances": admin.instances(dash(request).app)})


def topics(request: Request) -> JSONResponse:
    data = dash(request).snapshots.current.data
    return json_response({"topics": data["topics"], "as_of": data["as_of"]})
