"""Acceptance fixtures: a cluster of real `tasker run` processes per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from tasker import brokers
from tests.acceptance.cluster import Cluster
from tests.fixtures import jobs

TOPICS = [c.topic for c in (jobs.Record, jobs.Flaky, jobs.Slow, jobs.Hard)]


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


@pytest.fixture
def publisher(pg_url: str, amqp_url: str):  # type: ignore[no-untyped-def]
    from tasker import Tasker

    app = Tasker(pg_url, broker=amqp_url)
    app.register(jobs.Record, jobs.Flaky, jobs.Slow, jobs.Hard)
    yield app
    app.close()
