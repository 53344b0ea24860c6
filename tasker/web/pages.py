"""The HTML pages: overview, tasks, one task, instances, topics, and the live
fragments that htmx polls (answered from the shared snapshot, with ETags)."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from tasker import admin
from tasker.states import Status
from tasker.web import params, views
from tasker.web.state import check_topic, dash, not_modified, render, with_etag

CHART_W, CHART_H = 720, 120
STATUSES = [s.value for s in Status]


def chart(throughput: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of an SVG chart: per minute, success stacked under failed."""
    peak = max([t["success"] + t["failed"] for t in throughput] + [1])
    step = CHART_W / max(len(throughput), 1)
    bars = []
    for i, t in enumerate(throughput):
        ok_h = CHART_H * t["success"] / peak
        bad_h = CHART_H * t["failed"] / peak
        bars.append(
            {
                "x": round(i * step, 1),
                "w": round(max(step - 1, 1), 1),
                "ok_y": round(CHART_H - ok_h, 1),
                "ok_h": round(ok_h, 1),
                "bad_y": round(CHART_H - ok_h - bad_h, 1),
                "bad_h": round(bad_h, 1),
                "label": f"{t['minute']:%H:%M}: {t['success']} success, {t['failed']} failed",
            }
        )
    total = sum(t["success"] + t["failed"] for t in throughput)
    return {"bars": bars, "peak": peak, "w": CHART_W, "h": CHART_H, "total": total}


def _overview_context(request: Request) -> dict[str, Any]:
    snap = dash(request).snapshots.current
    return {
        "s": snap.data["status"],
        "topics": snap.data["topics"],
        "chart": chart(snap.data["throughput"]),
        "as_of": snap.data["as_of"],
        "statuses": STATUSES,
        "marks": snap.data["marks"],
        "exact_age_s": snap.data["exact_age_s"],
        "cap": views.COUNT_CAP,
    }


def overview(request: Request) -> Response:
    return render(request, "overview.html", _overview_context(request))


def overview_live(request: Request) -> Response:
    version = dash(request).snapshots.current.version
    cached = not_modified(request, version)
    if cached is not None:
        return cached
    return with_etag(render(request, "_overview_live.html", _overview_context(request)), version)


def _tasks_context(request: Request) -> dict[str, Any]:
    d = dash(request)
    query = params.parse_task_query(request.query_params.multi_items())
    check_topic(d, query.filter)
    page = views.task_page(d.app, query.filter, before=query.before, limit=query.limit)
    values = query.filter_values()
    keep = {**values, **({"limit": str(query.limit)} if query.limit != 50 else {})}
    next_url = (
        "/tasks?" + urlencode({**keep, "before": page["next_before"]})
        if page["next_before"] is not None
        else None
    )
    statuses = query.filter.statuses or ()
    can_bulk = bool(statuses) and all(s.value in ("failed", "success") for s in statuses)
    return {
        "page": page,
        "values": values,
        "topics": sorted(d.snapshots.current.data["status"]["counts"]),
        "statuses": STATUSES,
        "next_url": next_url,
        "first_url": "/tasks?" + urlencode(keep) if query.before is not None else None,
        "live_url": "/live/tasks?" + urlencode(request.query_params.multi_items()),
        "bulk_url": "/tasks/retry?" + urlencode(values) if can_bulk else None,
    }


def tasks(request: Request) -> Response:
    return render(request, "tasks.html", _tasks_context(request))


def tasks_live(request: Request) -> Response:
    """The rows of the task list again, unless no count changed since the
    browser's copy: then 304 without touching the database."""
    snap = dash(request).snapshots.current
    key = f"{snap.counts_version}?{request.url.query}"
    etag = hashlib.sha256(key.encode()).hexdigest()[:20]
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    return with_etag(render(request, "_task_rows.html", _tasks_context(request)), etag)


def task(request: Request) -> Response:
    task_id = params.parse_int("id", request.path_params["task_id"])
    row = views.task_detail(dash(request).app, task_id or 0)
    return render(request, "task.html", {"t": row})


def instances(request: Request) -> Response:
    rows = admin.instances(dash(request).app)
    return render(request, "instances.html", {"rows": rows})


def topics(request: Request) -> Response:
    return render(request, "topics.html", _overview_context(request))


def topics_live(request: Request) -> Response:
    version = dash(request).snapshots.current.version
    cached = not_modified(request, version)
    if cached is not None:
        return cached
    return with_etag(render(request, "_topics_rows.html", _overview_context(request)), version)
