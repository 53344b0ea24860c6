"""Peer benchmark: Celery 5 with RabbitMQ and the SQLAlchemy result backend.

Run with the peers venv:  .venv-peers/bin/python bench/peers/celery_bench.py --n 5000
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg
from celery.backends.database import DatabaseBackend

import common
from celery_tasks import DBNAME, QUEUE, RESULT_DB_URL, app, noop, stamp
from common import Deadline, Figures, WorkerGroup

PREFIX = "celery"
DONE_QUERY = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"


def prepare_backend() -> None:
    """Create celery_taskmeta in the fresh database before any worker polls it."""
    DatabaseBackend(app=app, url=RESULT_DB_URL)


def purge_queue() -> None:
    app.control.purge()


def queue_depth() -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(QUEUE, passive=True).message_count)


def wait_for_depth(target: int, deadline: Deadline) -> None:
    """Wait until RabbitMQ holds ``target`` messages: publishes are not confirmed,
    so some may still be in flight when ``delay()`` returns."""
    while queue_depth() < target:
        deadline.check()
        time.sleep(common.POLL_INTERVAL_S)


def measure_publish(args: argparse.Namespace) -> Figures:
    # Celery has no batch publish, so there is no publish_many figure.
    name = f"{PREFIX}.publish_single"
    deadline = Deadline.after(name, args.timeout)
    noop.delay(-1)  # warm-up: opens the broker connection outside the timing
    seconds = common.timed_loop(range(args.n), lambda i: noop.delay(i), deadline)
    wait_for_depth(args.n + 1, deadline)
    purge_queue()
    return common.rate(name, args.n, seconds)


def start_workers(workers: WorkerGroup, args: argparse.Namespace) -> None:
    # The prefork pool is Celery's default, so it is what a new user runs; we ask
    # for 8 children per worker process (the default would be one per core).
    for index in range(args.workers):
        argv = [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker"]
        argv += ["-Q", QUEUE, "-P", "prefork", f"--concurrency={args.concurrency}"]
        argv += [f"--hostname=bench{index}@%h", "--loglevel=WARNING"]
        workers.start(argv, f"worker-{index}")


def measure_e2e(
    args: argparse.Namespace, conn: psycopg.Connection, workers: WorkerGroup
) -> Figures:
    name = f"{PREFIX}.e2e_{args.workers}proc"
    deadline = Deadline.after(name, args.timeout)
    for i in range(args.n):  # backlog, not timed
        noop.delay(i)
    wait_for_depth(args.n, deadline)
    deadline = Deadline.after(name, args.timeout)
    began = time.perf_counter()
    start_workers(workers, args)
    common.wait_for_count(conn, DONE_QUERY, args.n, deadline, workers)
    return common.rate(name, args.n, time.perf_counter() - began)


def measure_latency(
    args: argparse.Namespace, conn: psycopg.Connection, workers: WorkerGroup
) -> Figures:
    deadline = Deadline.after(f"{PREFIX}.latency_p50", args.timeout)
    published = common.publish_paced(
        lambda i: stamp.delay(i), args.latency_tasks, args.latency_interval_ms / 1000, deadline
    )
    common.wait_for_count(conn, "SELECT count(*) FROM lat", len(published), deadline, workers)
    latencies = common.latencies_ms(published, common.read_starts(conn))
    return common.latency_figures(PREFIX, latencies)


def run_once(args: argparse.Namespace) -> Figures:
    common.recreate_database(DBNAME)
    prepare_backend()
    purge_queue()  # leftovers of an earlier, interrupted run
    with common.connect(DBNAME) as conn:
        figures = measure_publish(args)
        with WorkerGroup(PREFIX) as workers:
            figures |= measure_e2e(args, conn, workers)
            figures |= measure_latency(args, conn, workers)
    return figures


if __name__ == "__main__":
    sys.exit(common.main(__doc__ or PREFIX, run_once))
