"""Django's task framework on tasker: a real project, `manage.py tasker run`
in a subprocess, on PostgreSQL, with Django 6 and with the backport."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.contrib.conftest import DjangoProject
from tests.waiting import wait_for

pytestmark = [pytest.mark.django, pytest.mark.pg]


def finished(project: DjangoProject, task_id: str) -> dict[str, Any] | None:
    got = project.drive("result", task_id)
    return got if got["refreshed"]["finished"] else None


def test_enqueue_runs_on_the_worker_and_the_result_reads_the_row(project: DjangoProject) -> None:
    enqueued = project.drive("enqueue", "add", "[1, 2]", '{"times": 3}')
    assert enqueued["status"] == "READY"
    assert enqueued["args"] == [1, 2] and enqueued["kwargs"] == {"times": 3}
    row = project.row(enqueued["id"])
    assert row is not None and row["topic"] == "django/default/shop.tasks.add"

    got = wait_for(lambda: finished(project, enqueued["id"]), timeout=30, what="add to finish")
    for view in (got["result"], got["refreshed"]):  # get_result(), then refresh()
        assert view["status"] == "SUCCESSFUL", view
        assert view["return_value"] == {"sum": 9}
        assert view["errors"] == [] and len(view["workers"]) == 1
    assert project.row(enqueued["id"])["status"] == "success"  # type: ignore[index]


def test_a_failing_task_is_failed_with_its_exception(project: DjangoProject) -> None:
    enqueued = project.drive("enqueue", "refuse", '["pen"]', "{}")
    assert (enqueued["queue"], enqueued["priority"]) == ("slow", 7)
    assert project.row(enqueued["id"])["topic"] == "django/slow/shop.tasks.refuse"  # type: ignore[index]

    got = wait_for(lambda: finished(project, enqueued["id"]), timeout=30, what="refuse to fail")
    view = got["refreshed"]
    assert view["status"] == "FAILED"
    assert "return_value" not in view
    (error,) = view["errors"]
    assert error["class"] == "shop.tasks.OutOfStock"
    assert "no pen left" in error["traceback"] and "raise OutOfStock" in error["traceback"]
    assert view["exception_is"] == "OutOfStock"  # TaskError.exception_class imports it


def test_enqueue_in_a_rolled_back_atomic_block_leaves_no_task(project: DjangoProject) -> None:
    rolled = project.drive("rollback", "add", "[5, 5]")
    assert rolled["seen_inside"] == "READY"  # get_result in the block sees its own row
    assert project.row(rolled["id"]) is None
    assert project.drive("result", rolled["id"]) == {"missing": "TaskResultDoesNotExist"}

    committed = project.drive("commit", "add", "[6, 6]")
    assert project.row(committed["id"]) is not None
    got = wait_for(lambda: finished(project, committed["id"]), timeout=30, what="committed add")
    assert got["refreshed"]["return_value"] == {"sum": 12}


def test_priority_and_run_after_map_to_the_row(project: DjangoProject) -> None:
    enqueued = project.drive(
        "enqueue", "add", "[1, 1]", "{}", "--priority", "50", "--delay", "3600"
    )
    assert enqueued["priority"] == 50
    row = project.row(enqueued["id"])
    assert row is not None and row["priority"] == 50
    assert dt.timedelta(minutes=59) < row["delay"] <= dt.timedelta(hours=1)
    view = project.drive("result", enqueued["id"])["refreshed"]
    assert view["status"] == "READY" and view["priority"] == 50 and view["started_at"] is None


def test_a_task_taking_context_sees_its_result(project: DjangoProject) -> None:
    enqueued = project.drive("enqueue", "attempt_of", '["x"]', "{}")
    got = wait_for(lambda: finished(project, enqueued["id"]), timeout=30, what="attempt_of")
    assert got["refreshed"]["return_value"] == {"label": "x", "attempt": 1, "id": enqueued["id"]}


def test_other_cli_commands_pass_through(project: DjangoProject) -> None:
    enqueued = project.drive("enqueue", "refuse", '["ink"]', "{}")
    wait_for(lambda: finished(project, enqueued["id"]), timeout=30, what="refuse to fail")
    done = project.manage("tasker", "tasks", "--status", "failed")
    assert done.returncode == 0, done.stderr
    assert "django/slow/shop.tasks.refuse" in done.stdout
    status = project.manage("tasker", "status")
    assert status.returncode == 0 and "django/default/shop.tasks.add" in status.stdout
    wrong = project.manage("tasker", "no-such-command")
    assert wrong.returncode != 0 and "no-such-command" in wrong.stderr


def test_a_task_given_two_runs_retries_and_keeps_the_first_error(project: DjangoProject) -> None:
    enqueued = project.drive("enqueue", "flaky", "[5]", "{}")
    got = wait_for(lambda: finished(project, enqueued["id"]), timeout=30, what="flaky to end")
    view = got["refreshed"]
    assert view["status"] == "SUCCESSFUL" and view["return_value"] == {"n": 5, "attempt": 2}
    (error,) = view["errors"]
    assert error["class"] == "builtins.ConnectionError"
    assert "the first run fails" in error["traceback"]
    assert len(view["workers"]) == 2  # TaskResult.attempts
