"""Shared fixtures: migrated SQLite and PostgreSQL databases, RabbitMQ, apps.

PostgreSQL and RabbitMQ are required: when they cannot be reached the tests
that need them fail (they never skip), so a CI run cannot pass without them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("TASKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("TASKER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
TEMPLATE = f"tasker_tpl_{os.getpid()}"  # one per pytest session: sessions may overlap


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for these tests and is unreachable: {exc}")


def _pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, cloned for each test."""
    with _pg_admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    migrate(_pg_url(TEMPLATE))
    yield TEMPLATE
    with _pg_admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


@contextlib.contextmanager
def pg_clone(template: str) -> Iterator[str]:
    """A fresh migrated database cloned from `template`, dropped afterwards."""
    name = f"tasker_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    yield _pg_url(name)
    with _pg_admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    with pg_clone(pg_template) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'tasker.db'}"
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", "pg"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def local_broker(tmp_path: Path) -> str:
    return f"filesystem://{tmp_path / 'broker'}"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    import kombu

    conn = kombu.Connection(AMQP_URL, connect_timeout=5)
    try:
        conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"RabbitMQ is required for these tests and is unreachable: {exc}")
    finally:
        conn.release()
    return AMQP_URL


@pytest.fixture
def app(db_url: str, local_broker: str):  # type: ignore[no-untyped-def]
    from tasker import Tasker

    a = Tasker(db_url, broker=local_broker)
    yield a
    a.close()


def core_set_timings(conn, *, master_out_of_date_ms: int, instance_heartbeat_ms: int) -> None:  # type: ignore[no-untyped-def]
    """Short beats for a test's cluster (ms, as the core row keeps them), so
    elections take milliseconds instead of seconds."""
    conn.execute(
        sa.text("UPDATE core SET master_out_of_date = :lease, instance_heartbeat = :beat"),
        {"lease": master_out_of_date_ms, "beat": instance_heartbeat_ms},
    )
