"""`TaskerBackend`: Django's task framework on tasker's rows.

Mapping (see docs/howto/django.md):

- a Django task runs as the tasker topic `<topic_prefix><queue_name>/<module
  path>` (`django/default/shop.tasks.send_receipt`): one topic per function
  and queue, so each has its own history, stats and settings;
- the payload is `{"args": [...], "kwargs": {...}}` (JSON only, as Django requires);
- `priority` (-100..100) is tasker's priority (higher first, in both);
  `run_after` is `exec_after`;
- statuses: pending and retry are READY, running RUNNING, success
  SUCCESSFUL, failed FAILED; the result id is the task row's id as text;
- each errlog entry is one `TaskError` (exception class path, traceback).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone
from django.utils.module_loading import import_string

from tasker import store
from tasker.app import Tasker
from tasker.contrib.django import compat, config, errors
from tasker.contrib.django.worker import DjangoTask, message_class
from tasker.exceptions import TaskNotFound
from tasker.publishing import adopt

STATUSES = {
    "pending": compat.TaskResultStatus.READY,
    "retry": compat.TaskResultStatus.READY,
    "running": compat.TaskResultStatus.RUNNING,
    "success": compat.TaskResultStatus.SUCCESSFUL,
    "failed": compat.TaskResultStatus.FAILED,
}

# Django makes one backend object per alias *and thread* (its connection
# handler is thread-local); these let them share one Tasker app (one engine
# and broker) per process and configuration, as Django's database
# connections share their settings.
_APPS: dict[tuple[str, str | None], Tasker] = {}
_APPS_LOCK = threading.Lock()


class TaskerBackend(compat.BaseTaskBackend):
    """A Django task backend whose tasks are tasker task rows.

    `TASKS = {"default": {"BACKEND": "tasker.contrib.django.TaskerBackend",
    "QUEUES": [...], "OPTIONS": {...}}}`; OPTIONS as in
    `tasker.contrib.django.config`.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        config.check(self.options)
        self.topic_prefix: str = self.options.get("topic_prefix", config.DEFAULT_PREFIX)
        self.database_alias: str = self.options.get("database", "default")
        self.tasks: dict[str, Any] = {}
        """module path -> Task: every `@task` validated by this backend (in this thread)."""
        self._classes: dict[str, type[DjangoTask]] = {}

    # --- configuration --------------------------------------------------------

    @property
    def database_url(self) -> str:
        """tasker's database: OPTIONS `database_url`, else Django's own."""
        return config.database_url(self.options, settings.DATABASES)

    @property
    def shares_database(self) -> bool:
        """Whether tasker's database is Django's `database` (then an enqueue
        inside `atomic` is written on Django's connection)."""
        theirs = config.django_database_url(settings.DATABASES, self.database_alias)
        return config.same_database(self.database_url, theirs)

    @property
    def app(self) -> Tasker:
        """The process's tasker app for this configuration (made on first use)."""
        key = (self.database_url, self.options.get("broker_url"))
        with _APPS_LOCK:
            found = _APPS.get(key)
            if found is None:
                found = _APPS[key] = Tasker(key[0], broker=key[1])
            return found

    def topic(self, task: Any, queue_name: str | None = None) -> str:
        """The tasker topic of a Django task on a queue (default: the task's)."""
        return f"{self.topic_prefix}{queue_name or task.queue_name}/{task.module_path}"

    def message_class(self, task: Any, queue_name: str | None = None) -> type[DjangoTask]:
        """The MsgQ class that carries `task` on a queue (made once per topic)."""

        topic = self.topic(task, queue_name)
        found = self._classes.get(topic)
        if found is None:
            found = self._classes[topic] = message_class(self, task, topic)
        return found

    # --- Django's backend API -------------------------------------------------

    def validate_task(self, task: Any) -> None:
        """Django's checks; then remember the task for the worker."""
        super().validate_task(task)
        self.tasks.setdefault(task.module_path, task)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Write the task row (on Django's connection inside `atomic`, when the
        database is shared) and return its READY `TaskResult`."""
        self.validate_task(task)
        result = self._result(task, "pending", args=args, kwargs=kwargs)
        msg = self.message_class(task)(args=result.args, kwargs=result.kwargs)
        connection = self._atomic_connection()
        task_id = self.app.publish(
            msg, priority=task.priority, exec_after=task.run_after, connection=connection
        )
        object.__setattr__(result, "id", str(task_id))
        object.__setattr__(result, "enqueued_at", timezone.now())
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        """The `TaskResult` of a task row; `TaskResultDoesNotExist` when there
        is none, or when it is not a Django task of this backend."""
        try:
            task_id = int(result_id)
        except (TypeError, ValueError):
            raise compat.TaskResultDoesNotExist(result_id) from None
        try:
            # Inside atomic on PostgreSQL, read on Django's connection to see
            # what this transaction wrote. Not on SQLite: Django's sqlite3
            # connection converts timestamps itself (detect_types), which
            # SQLAlchemy's reading of the row does not expect.
            connection = self._atomic_connection() if self.app.db.is_postgres else None
            if connection is not None:
                with adopt(connection, self.app.db) as conn:
                    row = store.task_get(conn, task_id=task_id)
            else:
                with self.app.transaction() as conn:
                    row = store.task_get(conn, task_id=task_id)
        except TaskNotFound:
            raise compat.TaskResultDoesNotExist(result_id) from None
        return self.result_of(row)

    def result_of(self, row: Any) -> Any:
        """The `TaskResult` of a task row (`TaskResultDoesNotExist` for another topic)."""
        task = self._task_of(row.topic, row.priority)
        if task is None:
            raise compat.TaskResultDoesNotExist(str(row.id))
        data = json.loads(row.input) if row.input else {}
        result = self._result(
            task, row.status, args=data.get("args", []), kwargs=data.get("kwargs", {})
        )
        values = {
            "id": str(row.id),
            "enqueued_at": row.created,
            "started_at": row.started,
            "last_attempted_at": row.started,
            "finished_at": row.finished if row.status in ("success", "failed") else None,
            "errors": [
                compat.TaskError(exception_class_path=path, traceback=text)
                for path, text in errors.task_errors(row.errlog or "")
            ],
            "worker_ids": [w for w in (row.worker_fqdn or "").splitlines() if w],
        }
        if row.status == "success" and row.result:
            values["_return_value"] = json.loads(row.result)
        for name, value in values.items():
            object.__setattr__(result, name, value)
        return result

    # --- helpers --------------------------------------------------------------

    def _result(self, task: Any, status: str, *, args: Any, kwargs: Any) -> Any:
        return compat.TaskResult(
            task=task, id="", status=STATUSES[status], enqueued_at=None, started_at=None,
            last_attempted_at=None, finished_at=None, args=args, kwargs=kwargs,
            backend=self.alias, errors=[], worker_ids=[],
        )  # fmt: skip

    def _atomic_connection(self) -> Any:
        """Django's DB-API connection when an `atomic` block is open on the
        shared database, else None (tasker's own connection is used)."""
        django_conn = connections[self.database_alias]
        if not django_conn.in_atomic_block or not self.shares_database:
            return None
        django_conn.ensure_connection()
        return django_conn.connection

    def _task_of(self, topic: str, priority: int) -> Any:
        """The Django Task of a topic of this backend, or None."""
        if not topic.startswith(self.topic_prefix):
            return None
        queue_name, sep, path = topic[len(self.topic_prefix) :].rpartition("/")
        if not sep:
            return None
        task = self.tasks.get(path)
        if task is None:
            try:
                task = import_string(path)
            except ImportError:
                return None
            if not isinstance(task, compat.Task):
                return None
        return task.using(queue_name=queue_name, priority=priority)
