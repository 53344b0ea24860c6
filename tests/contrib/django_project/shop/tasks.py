"""The project's @task functions (found by autodiscovery of `<app>.tasks`)."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django < 6: the backport
    from django_tasks import task


class OutOfStock(Exception):
    """A project exception: its class path must reach TaskResult.errors."""


@task()
def add(a, b, *, times=1):
    return {"sum": (a + b) * times}


@task(priority=7, queue_name="slow")
def refuse(sku):
    raise OutOfStock(f"no {sku} left")


@task(takes_context=True)
def attempt_of(context, label):
    return {"label": label, "attempt": context.attempt, "id": context.task_result.id}


@task(takes_context=True)
def flaky(context, n):
    """Fails its first run; OPTIONS["tasks"] gives it two runs."""
    if context.attempt < 2:
        raise ConnectionError("the first run fails")
    return {"n": n, "attempt": context.attempt}
