"""The dashboard's data layer on SQLite and PostgreSQL: keyset pages, filters,
bulk retry by filter, and the overview read."""

from __future__ import annotations

import datetime as dt

import pytest

from tasker import Tasker, admin, store
from tasker.exceptions import ConfigurationError
from tasker.states import Status
from tasker.web import views
from tasker.web.views import TaskFilter


def _seed(app: Tasker) -> tuple[list[int], list[int]]:
    ids = [admin.publish(app, f"t.{i % 3}", {"n": i}) for i in range(23)]
    cancelled = admin.cancel(app, ids[::4])  # pending -> failed
    return ids, cancelled


def _all_pages(app: Tasker, f: TaskFilter, limit: int) -> list[int]:
    seen: list[int] = []
    before = None
    for _ in range(50):
        page = views.task_page(app, f, before=before, limit=limit)
        seen += [t["id"] for t in page["tasks"]]
        before = page["next_before"]
        if before is None:
            return seen
    raise AssertionError("paging did not end")


def test_keyset_pages_cover_every_row_once_newest_first(app: Tasker) -> None:
    ids, failed = _seed(app)
    every = _all_pages(app, TaskFilter(), limit=5)
    assert every == sorted(ids, reverse=True)  # one publish per transaction: created follows id
    assert _all_pages(app, TaskFilter(statuses=(Status.FAILED,)), 2) == sorted(failed)[::-1]
    topic = _all_pages(app, TaskFilter(topic="t.1"), 3)
    assert topic == [i for i in sorted(ids, reverse=True) if (i - ids[0]) % 3 == 1]
    one = views.task_page(app, TaskFilter(task_id=ids[5]))
    assert [t["id"] for t in one["tasks"]] == [ids[5]] and one["next_before"] is None
    assert (
        views.task_page(app, TaskFilter(task_id=ids[1], statuses=(Status.FAILED,)))["tasks"]
        == []
    )
    future = dt.timedelta(0)
    assert views.task_page(app, TaskFilter(since=future))["tasks"] == []
    assert len(views.task_page(app, TaskFilter(until=future), limit=500)["tasks"]) == 23
    with pytest.raises(ConfigurationError):
        views.task_page(app, TaskFilter(), limit=501)


def test_bulk_retry_moves_exactly_the_filtered_set(app: Tasker) -> None:
    ids, failed = _seed(app)
    with pytest.raises(ConfigurationError):
        views.count_retry_matching(app, TaskFilter(topic="t.0"))
    with pytest.raises(ConfigurationError):
        views.retry_matching(app, TaskFilter(statuses=(Status.PENDING,)))
    f = TaskFilter(topic="t.0", statuses=(Status.FAILED,))
    expected = sorted(i for i in failed if (i - ids[0]) % 3 == 0)
    assert views.count_retry_matching(app, f) == len(expected)
    assert views.retry_matching(app, f) == expected
    assert views.count_retry_matching(app, f) == 0
    assert admin.get_task(app, expected[0])["status"] == "pending"
    assert views.topic_exists(app, "t.0") and not views.topic_exists(app, "' OR 1=1")


def test_overview_reads_counts_topics_and_an_hour_of_throughput(app: Tasker) -> None:
    _seed(app)
    data = views.overview(app)
    assert data["status"]["counts"]["t.0"] == {"pending": 6, "failed": 2}
    topics = {t["topic"]: t for t in data["topics"]}
    assert topics["t.0"]["total"] == 8 and topics["t.0"]["counts"]["failed"] == 2
    assert len(data["throughput"]) == 60
    assert sum(m["failed"] for m in data["throughput"]) == 6  # cancelled just now
    detail = views.task_detail(app, admin.list_tasks(app, status="failed")[0]["id"])
    assert detail["attempt_log"][0]["errors"] == ["admin: cancelled"]


def test_capped_counts_topics_and_throughput_kept_between_reads(app: Tasker) -> None:
    ids, _ = _seed(app)
    data = views.overview(app, cap=3)
    assert data["saturated"] and data["status"]["counts"]["t.0"] == {"pending": 3, "failed": 2}
    assert data["marks"] == {
        "t.0": {"pending": ">="},
        "t.1": {"pending": ">="},
        "t.2": {"pending": ">="},
    }
    assert data["max_id"] == max(ids)
    exact = views.exact_counts(app)
    merged = views.overview(app, cap=3, exact=exact)
    assert merged["status"]["counts"]["t.0"] == {"pending": 6, "failed": 2}
    assert merged["marks"]["t.0"] == {"pending": "~"}

    rates = views.Throughput()
    first = views.overview(app, rates=rates)["throughput"]
    assert sum(m["failed"] for m in first) == 6
    admin.cancel(app, ids[1:3])
    again = views.overview(app, rates=rates)["throughput"]
    fresh = views.overview(app)["throughput"]
    assert sum(m["failed"] for m in again) == 8
    kept = {m["minute"]: (m["success"], m["failed"]) for m in again}
    read = {m["minute"]: (m["success"], m["failed"]) for m in fresh}
    both = kept.keys() & read.keys()  # the same minutes, even if a minute turned in between
    assert len(both) >= 59 and {m: kept[m] for m in both} == {m: read[m] for m in both}


def test_paused_topics_in_the_overview_and_which_topics_are_known(app: Tasker) -> None:
    _seed(app)
    admin.pause(app, "t.1")
    admin.pause(app, "t.empty")  # no task yet: still listed, so it can be resumed
    topics = {t["topic"]: t for t in views.overview(app)["topics"]}
    assert [n for n, t in topics.items() if t["paused"]] == ["t.1", "t.empty"]
    assert topics["t.empty"]["total"] == 0 and not topics["t.0"]["paused"]
    assert views.topic_known(app, "t.0") and views.topic_known(app, "t.empty")
    assert not views.topic_known(app, "t.nobody")
    admin.resume(app, "t.empty")
    assert not views.topic_known(app, "t.empty")
    assert "t.empty" not in {t["topic"] for t in views.overview(app)["topics"]}
    with app.transaction() as conn:  # an instance serving a topic no task has yet
        store.instance_register(
            conn, fqdn="h", pid=1, topics={"t.served": {"concurrency": 1}}, master_eligible=False
        )
    assert views.topic_known(app, "t.served")
