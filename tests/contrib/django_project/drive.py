"""Drives the project from a test: `python drive.py ACTION ...` prints JSON.

enqueue NAME ARGS_JSON KWARGS_JSON [--priority N] [--delay S] [--queue Q]
rollback NAME ARGS_JSON    enqueue inside atomic() and roll back
commit NAME ARGS_JSON      enqueue inside atomic() and commit
result ID                  get_result(ID), and refresh() of a fresh handle
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")
import django

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from shop import tasks  # noqa: E402


def described(result):
    out = {
        "id": result.id,
        "status": str(result.status),
        "args": result.args,
        "kwargs": result.kwargs,
        "priority": result.task.priority,
        "queue": result.task.queue_name,
        "errors": [
            {"class": e.exception_class_path, "traceback": e.traceback} for e in result.errors
        ],
        "workers": result.worker_ids,
        "finished": result.is_finished,
        "started_at": result.started_at.isoformat() if result.started_at else None,
    }
    if str(result.status) == "SUCCESSFUL":
        out["return_value"] = result.return_value
    if result.errors:
        out["exception_is"] = result.errors[0].exception_class.__name__
    return out


def main(action, *rest):
    if action == "enqueue":
        name, args, kwargs = rest[0], json.loads(rest[1]), json.loads(rest[2])
        options = dict(zip(rest[3::2], rest[4::2], strict=True))
        t = getattr(tasks, name)
        using = {}
        if "--priority" in options:
            using["priority"] = int(options["--priority"])
        if "--delay" in options:
            using["run_after"] = timezone.now() + dt.timedelta(seconds=float(options["--delay"]))
        if "--queue" in options:
            using["queue_name"] = options["--queue"]
        if using:
            t = t.using(**using)
        return described(t.enqueue(*args, **kwargs))
    if action in ("rollback", "commit"):
        t = getattr(tasks, rest[0])
        with transaction.atomic():
            result = t.enqueue(*json.loads(rest[1]))
            seen = described(t.get_result(result.id))  # this transaction sees its own row
            pid = connection.connection.info.backend_pid
            if action == "rollback":
                transaction.set_rollback(True)
        return {"id": result.id, "seen_inside": seen["status"], "backend_pid": pid}
    if action == "result":
        t = getattr(tasks, rest[1]) if len(rest) > 1 else None
        try:
            result = t.get_result(rest[0]) if t else tasks.add.get_backend().get_result(rest[0])
        except Exception as exc:  # TaskResultDoesNotExist, from django.tasks or the backport
            return {"missing": type(exc).__name__}
        before = described(result)
        result.refresh()
        return {"result": before, "refreshed": described(result)}
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
