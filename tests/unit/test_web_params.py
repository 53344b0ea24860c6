"""The dashboard's pure parts: query parsing, errlog by attempt, percentiles,
throughput, the chart, and the guard's origin rules."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from tasker import when
from tasker.states import Status
from tasker.web import pages, params, views
from tasker.web.guard import Guard, Refused


def test_a_full_query_parses_into_types() -> None:
    q = params.parse_task_query(
        [
            ("topic", "img.resize"),
            ("status", "failed,retry"),
            ("status", "failed"),
            ("since", "1h30m"),
            ("until", "2026-11-30T08:00"),
            ("q", "#12"),
            ("before", "99"),
            ("limit", "500"),
        ]
    )
    f = q.filter
    assert f.topic == "img.resize"
    assert f.statuses == (Status.FAILED, Status.RETRY)
    assert f.since == dt.timedelta(hours=1, minutes=30)
    assert f.until == dt.datetime(2026, 11, 30, 8, tzinfo=dt.timezone.utc)
    assert (f.task_id, q.before, q.limit) == (12, 99, 500)
    assert q.filter_values()["status"] == "failed,retry,failed"


def test_empty_values_are_absent() -> None:
    q = params.parse_task_query([("topic", ""), ("status", " "), ("limit", "")])
    assert q.filter == views.TaskFilter() and q.limit == 50


@pytest.mark.parametrize(
    "items",
    [
        [("limit", "abc")],
        [("limit", "0")],
        [("limit", "501")],
        [("limit", "\uff11\uff12")],  # full-width digits are not ASCII digits
        [("limit", "9" * 30)],
        [("since", "yesterday")],
        [("since", "nan")],
        [("since", "1e309d")],
        [("until", "10000-01-01")],
        [("since", "9999999999w")],
        [("status", "bogus")],
        [("status", "failed;DROP TABLE task")],
        [("q", "1 OR 1=1")],
        [("q", "-1")],
        [("before", "0")],
        [("topic", "x" * 201)],
        [("topic", "a\x00b")],
        [("topic", "\ud800")],
        [("nope", "1")],
        [("topic", "a"), ("topic", "b")],
        [("topic", "z" * 2000)],
    ],
)
def test_bad_values_are_bad_requests(items: list[tuple[str, str]]) -> None:
    with pytest.raises(params.BadRequest) as err:
        params.parse_task_query(items)
    assert len(str(err.value)) < 200


def test_json_bodies_and_purge() -> None:
    assert params.json_items({"status": ["failed"], "q": 5}) == [("status", ["failed"]), ("q", 5)]
    with pytest.raises(params.BadRequest):
        params.json_items(["status"])
    with pytest.raises(params.BadRequest):
        params.parse_filter([("status", {"x": 1})])
    with pytest.raises(params.BadRequest):
        params.parse_filter([("q", True)])
    assert params.parse_purge([("older_than", "7d")]) == (dt.timedelta(days=7), (Status.SUCCESS,))
    with pytest.raises(params.BadRequest):
        params.parse_purge([("older_than", "7d"), ("status", "pending")])
    with pytest.raises(params.BadRequest):
        params.parse_purge([])


def test_timespec() -> None:
    assert when.parse_duration("1w2d") == dt.timedelta(days=9)
    assert when.parse_when("2026-01-01") == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(params.BadRequest, match="longer than 100 years"):
        params.parse_task_query([("since", "36600d1s")])
    with pytest.raises(ValueError, match="longer than any date"):
        when.parse_duration("99999999999999w")


ERRLOG = (
    "admin: cancelled\n"
    "[attempt 1 on a.example at 2026-11-30T00:00:00Z] RuntimeError: one\n"
    "  Traceback line\n"
    "[attempt 2 on b.example at 2026-11-30T00:00:01Z] timeout\n"
)


def test_errlog_splits_by_attempt_and_hosts_come_from_worker_fqdn() -> None:
    entries = views.split_errlog(ERRLOG)
    assert [e["attempt"] for e in entries] == [None, 1, 2]
    assert entries[1]["text"].endswith("Traceback line")
    rows = views.attempts_of("a.example\nb.example\nc.example\n", ERRLOG, 3)
    assert [(r["attempt"], r["host"], len(r["errors"])) for r in rows] == [
        (0, None, 1),
        (1, "a.example", 1),
        (2, "b.example", 1),
        (3, "c.example", 0),
    ]
    assert views.attempts_of("", "", 0) == []


def test_percentiles_throughput_and_chart() -> None:
    assert views.percentile([], 0.5) is None
    assert views.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert views.percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    now = dt.datetime(2026, 11, 30, 10, 0, 30, tzinfo=dt.timezone.utc)
    minute = int(now.timestamp() // 60)
    rows = [
        SimpleNamespace(minute=minute, status="success", n=8),
        SimpleNamespace(minute=minute - 1, status="failed", n=2),
        SimpleNamespace(minute=minute - 99, status="failed", n=5),  # outside the hour
    ]
    series = views.throughput(now, rows, 60)
    assert len(series) == 60 and series[-1]["success"] == 8 and series[-2]["failed"] == 2
    assert sum(s["failed"] for s in series) == 2
    chart = pages.chart(series)
    assert chart["peak"] == 8 and chart["bars"][-1]["ok_h"] == pages.CHART_H


def _request(**headers: str) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8765),
        "path": "/api/tasks/retry",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"127.0.0.1:8765")],
    }
    return Request(scope)


def test_guard_origin_and_bearer() -> None:
    g = Guard("a-token-long-enough")
    g.check_origin(_request())  # a script: no Origin
    g.check_origin(_request(Origin="http://127.0.0.1:8765"))
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        with pytest.raises(Refused) as err:
            g.check_origin(_request(**headers))
        assert err.value.status == 403
    g.check_bearer(_request(Authorization="Bearer a-token-long-enough"))
    for value in ("", "Bearer", "Basic a-token-long-enough", "Bearer a-token-long-enougH"):
        with pytest.raises(Refused) as err:
            g.check_bearer(_request(Authorization=value))
        assert err.value.status == 401
    assert g.session_value != g.csrf_value and "a-token" not in g.session_value


def test_counts_above_the_cap_come_from_the_last_full_count() -> None:
    capped = [
        SimpleNamespace(topic="a", status="success", n=1000),
        SimpleNamespace(topic="a", status="failed", n=7),
        SimpleNamespace(topic="a", status="pending", n=0),
        SimpleNamespace(topic="b", status="success", n=1000),
    ]
    counts, marks = views.merge_counts(capped, 1000, None)
    assert counts == {"a": {"success": 1000, "failed": 7}, "b": {"success": 1000}}
    assert marks == {"a": {"success": ">="}, "b": {"success": ">="}}
    exact = {"a": {"success": 52_000, "failed": 6}, "b": {"success": 900}}
    counts, marks = views.merge_counts(capped, 1000, exact)
    assert counts["a"] == {"success": 52_000, "failed": 7}  # below the cap: the live count
    assert counts["b"] == {"success": 1000} and marks == {
        "a": {"success": "~"},
        "b": {"success": ">="},
    }


def test_the_full_count_runs_only_when_a_count_is_capped_and_then_rarely() -> None:
    from tasker.web.live import Snapshots

    state = {"saturated": False}
    full_counts: list[int] = []

    def read(exact):  # type: ignore[no-untyped-def]
        counts = {"a": {"success": (exact or {}).get("a", {}).get("success", 1000)}}
        return {
            "status": {"counts": counts},
            "saturated": state["saturated"],
            "max_id": 1,
            "throughput": [],
        }

    def count_all() -> dict[str, dict[str, int]]:
        full_counts.append(1)
        return {"a": {"success": 5000}}

    snaps = Snapshots(read, count_all, interval_s=1.0)
    first = snaps.run_once()
    assert full_counts == [] and first.data["exact_age_s"] is None
    state["saturated"] = True
    second = snaps.run_once()
    assert full_counts == [1] and second.data["status"]["counts"]["a"]["success"] == 5000
    assert second.counts_version != first.counts_version
    snaps.run_once()
    assert full_counts == [1]  # not again within EXACT_EVERY_S
