"""tasker as a backend of Django's task framework (`pip install tasker[django]`).

Django 6's `django.tasks`, or on older Django the `django-tasks` backport:

    INSTALLED_APPS = [..., "tasker.contrib.django"]
    TASKS = {"default": {"BACKEND": "tasker.contrib.django.TaskerBackend"}}

then `my_task.enqueue(...)` writes a task row and `python manage.py tasker
run` executes them. See docs/howto/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasker.contrib.django.backend import TaskerBackend

__all__ = ["TaskerBackend"]


def __getattr__(name: str) -> Any:
    """`TaskerBackend`, imported when Django asks for it: the package's
    Django-free parts (`config`, `errors`) import without Django."""
    if name == "TaskerBackend":
        from tasker.contrib.django.backend import TaskerBackend

        return TaskerBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
