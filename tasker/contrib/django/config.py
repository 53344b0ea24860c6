"""What `TASKS[alias]["OPTIONS"]` and Django's `DATABASES` say tasker should use.

OPTIONS (all optional):
`database_url` (default: Django's database `database`, when it is PostgreSQL
or SQLite), `broker_url` (default: TASKER_BROKER_URL, else the folder
broker), `database` (the Django database alias whose transactions an
`enqueue` joins; default "default"), `topic_prefix` (default "django/"),
`modules` (the modules holding `@task` functions; default: every installed
app's `tasks` module), and the tasker settings of every Django task's
topic: `timeout` (s, default 60), `retry` (runs allowed, default 1: a
failure is final, as in Django's own backends), `concurrency` (default 1),
`isolation` ("thread" or "process"); `tasks` overrides those per task:
`{"shop.tasks.sync_stock": {"retry": 5, "timeout": 600}}`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tasker.exceptions import ConfigurationError

DEFAULT_PREFIX = "django/"
TOPIC_DEFAULTS: dict[str, Any] = {"timeout": 60.0, "retry": 1, "concurrency": 1}
TOPIC_SETTINGS = ("timeout", "retry", "concurrency", "isolation")
KNOWN = {
    "database_url", "broker_url", "database", "topic_prefix", "modules", "tasks",
    *TOPIC_SETTINGS,
}  # fmt: skip


def check(options: dict[str, Any]) -> None:
    """Refuse an OPTIONS key this backend does not know (a typo would be silent)."""
    unknown = sorted(set(options) - KNOWN)
    if unknown:
        raise ConfigurationError(
            f"TASKS OPTIONS: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}"
        )
    for path, settings in (options.get("tasks") or {}).items():
        odd = sorted(set(settings) - set(TOPIC_SETTINGS))
        if odd:
            raise ConfigurationError(
                f"TASKS OPTIONS tasks[{path!r}]: unknown key(s) {', '.join(odd)}; "
                f"known: {', '.join(TOPIC_SETTINGS)}"
            )


def topic_settings(options: dict[str, Any], module_path: str) -> dict[str, Any]:
    """The MsgQ settings of one Django task: the defaults, OPTIONS', then its own."""
    out = dict(TOPIC_DEFAULTS)
    out.update({k: options[k] for k in TOPIC_SETTINGS if options.get(k) is not None})
    out.update((options.get("tasks") or {}).get(module_path, {}))
    return out


def django_database_url(databases: dict[str, Any], alias: str) -> str | None:
    """A SQLAlchemy URL for Django's database `alias`, or None when it is
    neither PostgreSQL nor SQLite (tasker then needs `database_url`)."""
    spec = databases.get(alias)
    if spec is None:
        return None
    engine = str(spec.get("ENGINE", ""))
    if engine.endswith("sqlite3"):
        name = str(spec.get("NAME", ""))
        if not name or name == ":memory:" or name.startswith("file:"):
            return None  # an in-memory database is not shared with another process
        return str(sa.URL.create("sqlite", database=name))
    if engine.endswith(("postgresql", "postgis")):
        port = spec.get("PORT")
        url = sa.URL.create(
            "postgresql+psycopg",
            username=spec.get("USER") or None,
            password=spec.get("PASSWORD") or None,
            host=spec.get("HOST") or None,
            port=int(port) if port else None,
            database=spec.get("NAME") or None,
        )
        return url.render_as_string(hide_password=False)
    return None


def database_url(options: dict[str, Any], databases: dict[str, Any]) -> str:
    """OPTIONS' `database_url`, else Django's database's; ConfigurationError if neither."""
    given = options.get("database_url")
    if given:
        return str(given)
    alias = options.get("database", "default")
    found = django_database_url(databases, alias)
    if found is None:
        raise ConfigurationError(
            f"Django's database {alias!r} is neither PostgreSQL nor a SQLite file: "
            "set TASKS OPTIONS database_url"
        )
    return found


def same_database(url_a: str, url_b: str | None) -> bool:
    """Whether two SQLAlchemy URLs name the same database (dialect, host, port, name)."""
    if url_b is None:
        return False
    a, b = sa.make_url(url_a), sa.make_url(url_b)
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        import os.path

        return os.path.abspath(a.database or "") == os.path.abspath(b.database or "")
    return (a.host or "localhost", a.port or 5432, a.database) == (
        b.host or "localhost",
        b.port or 5432,
        b.database,
    )
