"""Task fields on log lines: `task_id`, `topic` and `attempt` wherever a task is known.

A line logged about one task passes them in `extra` (`task_extra`). A line
logged while a task executes (by the runtime, by a library the task calls,
by the task's own `logging` calls) gets them from `about_task`, a context
variable set around the execution: each worker thread and each asyncio
task has its own value, so concurrent executions never mix their fields.
`TaskFields`, a filter on the handler, copies that value onto every
record that does not carry the fields already; `tasker run` installs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

FIELDS = ("task_id", "topic", "attempt")

# A context variable, not shared state: each thread and asyncio task sees its own.
_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "tasker_task_fields", default=None
)


def task_extra(task_id: int, topic: str | None, attempt: int | None, **more: Any) -> dict[str, Any]:
    """The `extra` of a log line about one task (`more`: e.g. `action=`)."""
    fields: dict[str, Any] = {"task_id": task_id, "topic": topic, "attempt": attempt}
    return {k: v for k, v in (fields | more).items() if v is not None}


@contextlib.contextmanager
def about_task(task_id: int, topic: str, attempt: int) -> Iterator[None]:
    """Every line logged in this context (thread or asyncio task) carries the task's fields."""
    token = _current.set({"task_id": task_id, "topic": topic, "attempt": attempt})
    try:
        yield
    finally:
        _current.reset(token)


class TaskFields(logging.Filter):
    """Adds the current task's fields (see `about_task`) to records without them."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current.get()
        if fields:
            for name, value in fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True
