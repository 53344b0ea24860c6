"""The worker side: one MsgQ class per Django task and queue, whose `exec`
calls the `@task` function with the args and kwargs of the payload."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, ClassVar

from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

from tasker.app import Tasker
from tasker.config import default_fqdn
from tasker.context import Context
from tasker.contrib.django import compat, config
from tasker.exceptions import ConfigurationError
from tasker.msgq import MsgQ


class DjangoTask(MsgQ):
    """Base of the generated classes: the payload is Django's args and kwargs."""

    args: list[Any] = dataclasses.field(default_factory=list)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    django_task: ClassVar[Any] = None
    backend_alias: ClassVar[str] = "default"

    def exec(self, ctx: Context, worker_id: int) -> object:
        """Call the Django task (with a `TaskContext` when it takes one);
        Django's database connections are checked before and after, as
        Django does around a request."""
        task = type(self).django_task
        backend = compat.task_backends[type(self).backend_alias]
        close_old_connections()
        try:
            result = _running(backend.get_result(str(ctx.task_id)), ctx)
            compat.task_started.send(type(backend), task_result=result)
            if task.takes_context:
                value = task.call(compat.TaskContext(task_result=result), *self.args, **self.kwargs)
            else:
                value = task.call(*self.args, **self.kwargs)
            return value
        finally:
            close_old_connections()


def _running(result: Any, ctx: Context) -> Any:
    """The TaskResult of the run now starting: the row may not show the
    start yet (tasker may write it after handing the task to a slot), so
    status, start time and one worker id per attempt come from `ctx`."""
    now = timezone.now()
    workers = list(result.worker_ids)[: ctx.attempt]
    workers += [default_fqdn()] * (ctx.attempt - len(workers))
    changes = {"status": compat.TaskResultStatus.RUNNING, "worker_ids": workers,
               "started_at": result.started_at or now, "last_attempted_at": now}  # fmt: skip
    for name, value in changes.items():
        object.__setattr__(result, name, value)
    return result


def message_class(backend: Any, task: Any, topic: str) -> type[DjangoTask]:
    """A DjangoTask subclass for `task` on `topic`, with the OPTIONS' topic settings."""
    attrs: dict[str, Any] = {
        "topic": topic,
        "django_task": task,
        "backend_alias": backend.alias,
        "__module__": __name__,
        "__qualname__": f"DjangoTask[{topic}]",
    }
    attrs.update(config.topic_settings(backend.options, task.module_path))
    return type(f"DjangoTask[{topic}]", (DjangoTask,), attrs)


def discover(backend: Any) -> list[Any]:
    """Import the modules holding the project's `@task` functions (OPTIONS
    `modules`, else every installed app's `tasks` module) and return the
    Django tasks of `backend`, by module path."""
    modules = backend.options.get("modules")
    if modules is None:
        autodiscover_modules("tasks")
    else:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"TASKS OPTIONS modules: cannot import {name!r}: {exc}"
                ) from None
    return [backend.tasks[path] for path in sorted(backend.tasks)]


def worker_app(backend: Any) -> Tasker:
    """The backend's app with a MsgQ class for every task on every queue of
    the backend (its QUEUES; with none, each task's own queue)."""
    app: Tasker = backend.app
    tasks = discover(backend)
    if not tasks:
        raise ConfigurationError(
            f"no @task functions use the task backend {backend.alias!r}: set its OPTIONS "
            "modules, or define them in an installed app's tasks module"
        )
    for task in tasks:
        for queue in sorted(backend.queues) or [task.queue_name]:
            cls = backend.message_class(task, queue)
            if app.registry.find(cls.topic) is not cls:
                app.register(cls)
    return app
