"""Prometheus exporter for one app: `start_exporter(app, port)`.

Each app gets its own `CollectorRegistry`, so two apps in one process never
clash. Three sources feed it:

- the app's stats hook: `tasker_tasks_total{topic,status}` counts publishes
  (status `pending`) and every finish; `tasker_task_duration_seconds`
  is a histogram of run times of finishes (success, retry, failed);
- the database, read at scrape time: `tasker_queue_depth{topic,status}` for
  pending, retry and running tasks, `tasker_oldest_due_seconds{topic}` and
  `tasker_database_up`, and `tasker_topic_paused{topic}` (1 paused, 0 not:
  every topic the app registers or the `topic` table names). These describe
  the whole cluster, so only the master exports them (or an exporter of an
  app that runs no instance): a `sum` over instances then counts each queue
  once;
- the running instance (if any): `tasker_is_master` and `tasker_master_term`;
- the process: `prometheus_client`'s process (`process_resident_memory_bytes`,
  `process_open_fds`, CPU), GC (`python_gc_*`) and platform (`python_info`)
  collectors, registered explicitly since the registry is not the default one.

The exporter binds 127.0.0.1 unless given another address.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
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
DEFAULT_ADDR = "127.0.0.1"
"""Where the exporter listens unless told otherwise: this machine only."""


DB_GAUGES_HELP = " (cluster-wide, from the master only: do not sum across instances)"


def master_or_standalone(app: Tasker) -> bool:
    """Whether `app`'s exporter reports the database gauges: when its instance is
    master, or when it runs no instance at all (a metrics-only process)."""
    running = app.instance
    return running is None or running.is_master


class _StateCollector(Collector):
    """Reads queue depth from the database and master state from the runner on scrape."""

    def __init__(self, app: Tasker, db_gauges: Callable[[], bool]) -> None:
        self.app = app
        self.db_gauges = db_gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.db_gauges():
            yield from self._from_database()
        yield from self._from_runner()

    def _from_database(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "tasker_database_up", "1 when the last scrape could read the DB" + DB_GAUGES_HELP
        )
        depth = GaugeMetricFamily(
            "tasker_queue_depth",
            "Tasks pending, retry or running" + DB_GAUGES_HELP,
            labels=["topic", "status"],
        )
        oldest = GaugeMetricFamily(
            "tasker_oldest_due_seconds",
            "Age of the oldest due task" + DB_GAUGES_HELP,
            labels=["topic"],
        )
        paused_g = GaugeMetricFamily(
            "tasker_topic_paused",
            "1 when the topic is paused (tasker pause)" + DB_GAUGES_HELP,
            labels=["topic"],
        )
        try:
            with self.app.transaction() as conn:
                store.no_jit(conn)
                counts = store.task_count_by_topic_status(conn, statuses=QUEUE_STATUSES)
                due = store.task_oldest_due_by_topic(conn, topics=store.task_topics(conn))
                paused = store.topic_paused(conn)
        except TaskerError as exc:
            log.warning("metrics: cannot read queue depth: %s", exc)
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for r in counts:
                depth.add_metric([r.topic, r.status], int(r.n))
            for r in due:
                oldest.add_metric([r.topic], max(0.0, (r.db_now - r.oldest).total_seconds()))
            for topic in sorted(set(self.app.registry.topics()) | paused):
                paused_g.add_metric([topic], 1 if topic in paused else 0)
        yield up
        yield depth
        yield oldest
        yield paused_g

    def _from_runner(self) -> Iterator[GaugeMetricFamily]:
        runner = self.app.instance
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
    def create(cls, app: Tasker, db_gauges: Callable[[], bool] | None = None) -> Metrics:
        """Metrics of `app`; `db_gauges` decides at each scrape whether this exporter
        reports the database gauges (default: `master_or_standalone(app)`)."""
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
        # Their constructors register on the registry given; memory over months
        # is what the README promises, so it is exported, not assumed.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
        decide = db_gauges or (lambda: master_or_standalone(app))
        registry.register(_StateCollector(app, decide))
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

    def serve(self, port: int, addr: str = DEFAULT_ADDR) -> None:
        self.server, self.thread = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def start_exporter(
    app: Tasker,
    port: int,
    addr: str = DEFAULT_ADDR,
    db_gauges: Callable[[], bool] | None = None,
) -> Metrics:
    """Serve /metrics for `app` on `addr`:`port` (0 picks a free one: see `Metrics.port`).

    `addr` defaults to loopback; give "0.0.0.0" (or an interface's address)
    for a Prometheus on another machine. `db_gauges` as in `Metrics.create`.
    Raises OSError when the address cannot be bound.
    """
    m = Metrics.create(app, db_gauges)
    m.serve(port, addr)
    log.info("metrics on http://%s:%s/metrics", addr, m.port, extra={"action": "metrics_started"})
    return m
