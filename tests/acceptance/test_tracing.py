"""OpenTelemetry across processes: a publishing process with an SDK provider
(in-memory exporter) and a real `tasker run` worker that configures the SDK
too (`tests.fixtures.traced`, spans to a file). The worker's CONSUMER spans
join the publisher's trace under its PRODUCER span, the context having
travelled in the row; a retry is a second span in the same trace. Without
a provider, or without opentelemetry at all, publish stores nothing and
works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tasker import Tasker, admin
from tests.acceptance.cluster import ROOT, Cluster, wait_for

pytestmark = [pytest.mark.acceptance]

HIDE_OTEL = """
import runpy, sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(name + " hidden by the test")

sys.meta_path.insert(0, Hide())
sys.argv = ["traced", "api"]
runpy.run_module("tests.fixtures.traced", run_name="__main__")
"""


def _publish(c: Cluster, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, *args], env=c.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _traceparent(c: Cluster, task_id: int) -> str | None:
    return c.scalar("SELECT traceparent FROM task WHERE id = :id", id=task_id)  # type: ignore[no-any-return]


def test_worker_spans_join_the_publishers_trace(any_cluster: Cluster, tmp_path: Path) -> None:
    cluster = any_cluster
    published = _publish(cluster, "-m", "tests.fixtures.traced", "sdk")
    ok_id, retry_id, async_id = published["ids"]
    producers = {s["attributes"]["messaging.message.id"]: s for s in published["spans"]
                 if s["kind"] == "PRODUCER"}  # fmt: skip
    (request,) = [s for s in published["spans"] if s["name"] == "GET /order"]
    assert set(producers) == {str(ok_id), str(retry_id), str(async_id)}
    for task_id, topic in ((ok_id, "t.traced.ok"), (retry_id, "t.traced.retry")):
        p = producers[str(task_id)]
        assert p["name"] == f"publish {topic}"
        assert p["trace_id"] == request["trace_id"] and p["parent_span_id"] == request["span_id"]
        assert p["attributes"]["messaging.system"] == "tasker"
        assert p["attributes"]["messaging.destination.name"] == topic
        stored = _traceparent(cluster, task_id)
        assert stored is not None and stored.startswith(f"00-{p['trace_id']}-{p['span_id']}-")

    spans_file = tmp_path / "worker-spans.jsonl"
    cluster.start(1, module="tests.fixtures.traced", TASKER_TEST_SPANS=str(spans_file))

    def consumers() -> list[dict[str, Any]]:
        return [s for s in _spans(spans_file) if s["kind"] == "CONSUMER"]

    wait_for(lambda: len(consumers()) == 4, 30, "4 CONSUMER spans (a retry makes two)")
    by_task: dict[int, list[dict[str, Any]]] = {}
    for s in consumers():
        by_task.setdefault(s["attributes"]["tasker.task_id"], []).append(s)
    for task_id, runs in by_task.items():
        p = producers[str(task_id)]
        for s in runs:
            assert s["trace_id"] == request["trace_id"]  # the publisher's trace
            assert s["parent_span_id"] == p["span_id"]  # under its PRODUCER span
            assert s["attributes"]["messaging.system"] == "tasker"
            assert s["attributes"]["messaging.message.id"] == str(task_id)
            assert s["attributes"]["tasker.queue_wait_s"] >= 0
    (ok_run,) = by_task[ok_id]
    assert ok_run["name"] == "run t.traced.ok" and ok_run["status"] == "UNSET"
    assert ok_run["attributes"]["tasker.attempt"] == 1
    first, second = sorted(by_task[retry_id], key=lambda s: s["attributes"]["tasker.attempt"])
    assert [first["attributes"]["tasker.attempt"], second["attributes"]["tasker.attempt"]] == [1, 2]
    assert first["status"] == "ERROR" and "fails on purpose" in first["description"]
    assert first["events"] == ["exception"]
    assert second["status"] == "UNSET" and second["span_id"] != first["span_id"]
    (async_run,) = by_task[async_id]
    assert async_run["name"] == "run t.traced.async"
    app = Tasker(cluster.db_url, broker=cluster.broker_url)
    try:
        assert admin.get_task(app, retry_id)["status"] == "success"
        # The coroutine ran inside its CONSUMER span (its own spans would be children).
        assert app.result(async_id, timeout=20).result == {"in_span": True}
    finally:
        app.close()


@pytest.mark.parametrize("how", ["api", "absent"])
def test_untraced_publish_stores_nothing_and_runs(
    local_cluster: Cluster, tmp_path: Path, how: str
) -> None:
    args = ["-m", "tests.fixtures.traced", "api"] if how == "api" else ["-c", HIDE_OTEL]
    published = _publish(local_cluster, *args)
    assert published["spans"] == []
    if how == "absent":
        assert published["otel_modules"] == 0  # nothing of it was imported
    for task_id in published["ids"]:
        assert _traceparent(local_cluster, task_id) is None
    local_cluster.start(1, module="tests.fixtures.traced")
    wait_for(lambda: local_cluster.counts(published["ids"])["success"] == 2, 30, "both tasks")
