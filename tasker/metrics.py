"""Prometheus exporter for one app: `start_exporter(app, port)`.

Each app gets its own `CollectorRegistry`, so two apps in one process never
clash. Three sources feed it:

- the app's stats hook: `tasker_tasks_total{topic,status}` counts publishes
  (status `pending`) and every finish; `tasker_task_duration_seconds`
  is a histogram of run times of finishes (success, retry, failed);
- the database, read at scrape time: `tasker_queue_depth{topic,status}` for
  pending, retry and running tasks and `tasker_oldest_due_seconds{topic}`;
- the running instance (if any): `tasker_is_master` and `tasker_master_term`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tasker import store
from tasker.exceptions import TaskerError
from tasker.states import Status

if TYPE_CHECKING:
    from tasker.app import Tasker

log = logging.getLogger(__name__)

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
QUEUE_STATUSES = (Status.PENDING, Status.RETRY, Status.RUNNING)


class _StateCollector(Collector):
    """Reads queue depth from the database and master state from the runner on scrape."""

    def __init__(self, app: Tasker) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("tasker_database_up", "1 when the last scrape could read the DB")
        depth = GaugeMetricFamily(
            "tasker_queue_depth", "Tasks pending, retry or running", labels=["topic", "status"]
        )
        oldest = GaugeMetricFamily(
            "tasker_oldest_due_seconds", "Age of the oldest due task", labels=["topic"]
        )
        try:
            with self.app.transaction() as conn:
                counts = store.task_count_by_topic_status(conn, statuses=QUEUE_STATUSES)
                due = store.task_oldest_due(conn)
        except TaskerError as exc:
            log.warning("metrics: cannot read queue depth: %s", exc)
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for r in counts:
                depth.add_metric([r.topic, r.status], int(r.n))
            for r in due:
                oldest.add_metric([r.topic], max(0.0, (r.db_now - r.oldest).total_seconds()))
        yield up
        yield depth
        yield oldest
        runner = self.app.running
        is_master = GaugeMetricFamily("tasker_is_master", "1 when this instance is master")
        is_master.add_metric([], 1 if getattr(runner, "is_master", False) else 0)
        yield is_master
        term = getattr(runner, "term", None)
        term_g = GaugeMetricFamily("tasker_master_term", "Term this instance is master of")
        term_g.add_metric([], float(term) if term is not None else 0.0)
        yield term_g


@dataclasses.dataclass
class Metrics:
    """The exporter of one app: its registry, metrics and HTTP server."""

    app: Tasker
    registry: CollectorRegistry
    tasks: Counter
    durations: Histogram
    server: Any = None
    thread: threading.Thread | None = None

    @classmethod
    def create(cls, app: Tasker) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        tasks = Counter(
            "tasker_tasks",
            "Tasks published (status pending) and finished, by topic and status",
            ["topic", "status"],
            registry=registry,
        )
        durations = Histogram(
            "tasker_task_duration_seconds",
            "Run time of finished executions, by topic and status",
            ["topic", "status"],
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        registry.register(_StateCollector(app))
        m = cls(app=app, registry=registry, tasks=tasks, durations=durations)
        app.stats.add(m.observe)
        return m

    def observe(self, topic: str, status: str, at: dt.datetime, duration_s: float) -> None:
        """The stats hook: count every event, time every finish."""
        self.tasks.labels(topic, status).inc()
        if status != Status.PENDING.value:
            self.durations.labels(topic, status).observe(max(0.0, duration_s))

    @property
    def port(self) -> int | None:
        return None if self.server is None else int(self.server.server_port)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        self.server, self.thread = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def start_exporter(app: Tasker, port: int, addr: str = "0.0.0.0") -> Metrics:
    """Serve /metrics for `app` on `port` (0 picks a free one: see `Metrics.port`)."""
    m = Metrics.create(app)
    m.serve(port, addr)
    log.info("metrics on http://%s:%s/metrics", addr, m.port, extra={"action": "metrics_started"})
    return m
