"""The Django backend's Django-free parts, in-process: which database it
uses and how errlog entries become Django's TaskErrors."""

from __future__ import annotations

import pytest

from tasker import outcome, text
from tasker.contrib.django import config, errors
from tasker.exceptions import ConfigurationError


class LedgerClosed(Exception):
    pass


def _raise_ledger_closed() -> None:
    raise LedgerClosed("the ledger is closed")


def _errlog_of(exc_fn: object, attempt: int) -> str:
    try:
        exc_fn()  # type: ignore[operator]
    except Exception as exc:
        return outcome.errlog_entry(attempt, text.describe(exc), outcome.traceback_below(exc))
    raise AssertionError("did not raise")


def test_errlog_entries_become_class_paths_and_tracebacks() -> None:
    log = (
        _errlog_of(_raise_ledger_closed, 1)
        + _errlog_of(lambda: {}["sku"], 2)
        + outcome.errlog_entry(3, "timed out after 5s")
    )
    first, second, third = errors.task_errors(log)
    assert first[0] == f"{__name__}.LedgerClosed"
    assert "the ledger is closed" in first[1] and "_raise_ledger_closed" in first[1]
    assert not first[1].startswith("  ")  # errlog's indent is taken off
    assert second[0] == "builtins.KeyError" and "'sku'" in second[1]
    assert third == (errors.FALLBACK, "timed out after 5s")
    assert errors.task_errors("") == []


def test_class_path_when_the_traceback_was_cut() -> None:
    assert errors.class_path("ValueError: no", []) == "builtins.ValueError"
    assert errors.class_path("Mystery: no", ["...(40 more)"]) == errors.FALLBACK
    assert errors.class_path("cancelled: an admin asked", []) == errors.FALLBACK


def test_the_database_url_comes_from_djangos_database() -> None:
    pg = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop",
                      "USER": "app", "PASSWORD": "p@ss", "HOST": "db", "PORT": "6432"}}  # fmt: skip
    url = config.database_url({}, pg)
    assert url == "postgresql+psycopg://app:p%40ss@db:6432/shop"
    assert config.same_database(url, config.django_database_url(pg, "default"))
    other = "postgresql+psycopg://app@db:6432/tasker"
    assert config.database_url({"database_url": other}, pg) == other
    assert not config.same_database(other, config.django_database_url(pg, "default"))

    lite = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/app/db.sqlite3"}}
    assert config.database_url({}, lite) == "sqlite:////srv/app/db.sqlite3"
    memory = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    mysql = {"default": {"ENGINE": "django.db.backends.mysql", "NAME": "shop"}}
    for databases in (memory, mysql, {}):
        with pytest.raises(ConfigurationError, match="database_url"):
            config.database_url({}, databases)


def test_unknown_options_are_refused() -> None:
    config.check({"broker_url": "amqp://", "retry": 3})
    with pytest.raises(ConfigurationError, match="brokerurl"):
        config.check({"brokerurl": "amqp://"})


def test_topic_settings_per_task() -> None:
    options = {"timeout": 20, "tasks": {"shop.tasks.flaky": {"retry": 2}}}
    assert config.topic_settings(options, "shop.tasks.flaky") == {
        "timeout": 20, "retry": 2, "concurrency": 1,
    }  # fmt: skip
    assert config.topic_settings(options, "shop.tasks.add")["retry"] == 1
    with pytest.raises(ConfigurationError, match="retries"):
        config.check({"tasks": {"shop.tasks.add": {"retries": 3}}})
