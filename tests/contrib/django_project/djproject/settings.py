"""Settings of the test project: PostgreSQL database TEST_DJANGO_DB (shared by
Django and tasker) and the broker TASKER_BROKER_URL, both set by the tests."""

from __future__ import annotations

import os

SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["tasker.contrib.django", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["TEST_DJANGO_DB"],
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
}
TASKS = {
    "default": {
        "BACKEND": "tasker.contrib.django.TaskerBackend",
        "QUEUES": ["default", "slow"],
        "OPTIONS": {
            "broker_url": os.environ["TASKER_BROKER_URL"],
            "timeout": 20,
            "tasks": {"shop.tasks.flaky": {"retry": 2}},
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
