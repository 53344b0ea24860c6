"""The Django app of tasker's backend: add "tasker.contrib.django" to
INSTALLED_APPS for `python manage.py tasker`."""

from __future__ import annotations

from django.apps import AppConfig


class TaskerConfig(AppConfig):
    """App label "tasker" (the default, "django", would read as Django's own)."""

    name = "tasker.contrib.django"
    label = "tasker"
    verbose_name = "tasker"
