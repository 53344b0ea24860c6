"""`tasker run` with TASKER_LOG_FORMAT=json: every line is one JSON object, and
the lines about a task (the runtime's and the task's own `logging`) carry its
task_id, topic and attempt."""

from __future__ import annotations

import json
from typing import Any

from tasker import Tasker
from tests.acceptance.cluster import Cluster, wait_for
from tests.fixtures.ops_jobs import Fine, Loud


def lines(cluster: Cluster) -> list[dict[str, Any]]:
    text = (cluster.tmp / "instance-0.log").read_text()
    # Every line must parse: json.loads raises on the first that does not.
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_the_failed_task(local_cluster: Cluster) -> None:
    local_cluster.start(module="tests.fixtures.ops_jobs", TASKER_LOG_FORMAT="json")
    app = Tasker(local_cluster.db_url, broker=local_cluster.broker_url)
    app.register(Loud, Fine)
    try:
        tid = app.publish(Loud(word="s3cret-free"))
        result = app.result(tid, timeout=30)
        assert not result.success

        def failed_lines() -> list[dict[str, Any]]:
            return [r for r in lines(local_cluster)
                    if r.get("task_id") == tid and r.get("action") == "failed"]

        about = wait_for(failed_lines, 20, "the JSON line of the failed task")
    finally:
        app.close()
    failed = about[0]
    assert failed["level"] == "WARNING"
    assert failed["topic"] == "ops.loud" and failed["attempt"] == 1
    assert f"task {tid} failed" in failed["message"]
    assert "loud failure" in failed["message"]
    assert failed["time"].startswith("20") and failed["logger"].startswith("tasker.")
    everything = lines(local_cluster)
    own = [r for r in everything if r["logger"] == "ops.job"]
    assert own and own[0]["message"] == "working on s3cret-free"
    assert (own[0]["task_id"], own[0]["topic"], own[0]["attempt"]) == (tid, "ops.loud", 1)
    # Lines about no task have no task fields.
    started = [r for r in everything if r.get("action") == "started"]
    assert started and "task_id" not in started[0]
