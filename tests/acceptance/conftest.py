"""Acceptance fixtures: a cluster of real `tasker run` processes per test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from tasker import brokers
from tests.acceptance.cluster import Cluster
from tests.conftest import migrate, pg_clone
from tests.fixtures import hostile, jobs

ALL = (jobs.Record, jobs.Flaky, jobs.Slow, jobs.Hard, jobs.Polite, jobs.Stubborn)
TOPICS = [c.topic for c in ALL] + hostile.TOPICS


def purge_queues(amqp_url: str) -> None:
    """Leftover messages of an earlier test would only be dropped, but noisily."""
    with kombu.Connection(amqp_url) as conn:
        channel = conn.channel()
        for topic in TOPICS:
            q = kombu.Queue(brokers.queue_name(topic), durable=True).bind(channel)
            q.declare()
            q.purge()


@pytest.fixture
def pg_cluster(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Cluster]:
    purge_queues(amqp_url)
    c = Cluster(pg_url, amqp_url, tmp_path)
    yield c
    c.close()
    print(c.logs())


@pytest.fixture
def local_cluster(sqlite_url: str, local_broker: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(sqlite_url, local_broker, tmp_path)
    yield c
    c.close()
    print(c.logs())


@pytest.fixture(params=["pg", "sqlite"])
def any_cluster(request: pytest.FixtureRequest) -> Cluster:
    """PostgreSQL + RabbitMQ, then the embedded default (SQLite + folder broker)."""
    return request.getfixturevalue("pg_cluster" if request.param == "pg" else "local_cluster")


@pytest.fixture(
    scope="module",
    params=[pytest.param("pg", marks=[pytest.mark.pg, pytest.mark.rabbit]), "sqlite"],
)
def module_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One cluster (no instance started yet) shared by the tests of a module,
    once on PostgreSQL + RabbitMQ and once on SQLite + the folder broker."""
    tmp = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "pg":
            amqp_url = request.getfixturevalue("amqp_url")
            purge_queues(amqp_url)
            db_url = stack.enter_context(pg_clone(request.getfixturevalue("pg_template")))
            broker_url = amqp_url
        else:
            db_url = f"sqlite:///{tmp / 'tasker.db'}"
            migrate(db_url)
            broker_url = f"filesystem://{tmp / 'broker'}"
        c = Cluster(db_url, broker_url, tmp)
        yield c
        c.close()
        print(c.logs())


@pytest.fixture
def publisher(pg_url: str, amqp_url: str):  # type: ignore[no-untyped-def]
    from tasker import Tasker

    app = Tasker(pg_url, broker=amqp_url)
    app.register(*ALL)
    yield app
    app.close()
