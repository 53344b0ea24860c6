"""Peer benchmark: procrastinate 3 on PostgreSQL.

Run with the peers venv:  .venv-peers/bin/python bench/peers/procrastinate_bench.py --n 5000
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

import common
from common import Deadline, Figures, WorkerGroup
from procrastinate_tasks import DBNAME, app, noop, stamp

PREFIX = "procrastinate"
BATCH_SIZE = 1000  # jobs per batch_defer call
DONE_QUERY = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"


def reset_jobs(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE procrastinate_jobs CASCADE")


def batch_defer(start: int, n: int) -> None:
    noop.batch_defer(*({"i": i} for i in range(start, min(start + BATCH_SIZE, n))))


def measure_publish(args: argparse.Namespace, conn: psycopg.Connection) -> Figures:
    name = f"{PREFIX}.publish_single"
    seconds = common.timed_loop(
        range(args.n), lambda i: noop.defer(i=i), Deadline.after(name, args.timeout)
    )
    figures = common.rate(name, args.n, seconds)
    reset_jobs(conn)

    name = f"{PREFIX}.publish_many"
    seconds = common.timed_loop(
        range(0, args.n, BATCH_SIZE),
        lambda start: batch_defer(start, args.n),
        Deadline.after(name, args.timeout),
    )
    figures |= common.rate(name, args.n, seconds)
    reset_jobs(conn)
    return figures


def start_workers(workers: WorkerGroup, args: argparse.Namespace) -> None:
    # procrastinate's worker is asyncio-based: --concurrency 8 lets one process run
    # 8 jobs at once (sync tasks such as ours go to a thread each). That is the
    # knob its docs point a new user to; the default of 1 would serialise jobs.
    # Log level warning, like Celery's worker default: no log line per job.
    for index in range(args.workers):
        argv = [sys.executable, "-m", "procrastinate", "--app=procrastinate_tasks.app"]
        argv += ["--log-level=warning"]
        argv += ["worker", f"--name=bench-{index}", f"--concurrency={args.concurrency}"]
        workers.start(argv, f"worker-{index}")


def measure_e2e(
    args: argparse.Namespace, conn: psycopg.Connection, workers: WorkerGroup
) -> Figures:
    name = f"{PREFIX}.e2e_{args.workers}proc"
    for start in range(0, args.n, BATCH_SIZE):  # backlog, not timed
        batch_defer(start, args.n)
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
        lambda i: stamp.defer(i=i), args.latency_tasks, args.latency_interval_ms / 1000, deadline
    )
    common.wait_for_count(conn, "SELECT count(*) FROM lat", len(published), deadline, workers)
    latencies = common.latencies_ms(published, common.read_starts(conn))
    return common.latency_figures(PREFIX, latencies)


def run_once(args: argparse.Namespace) -> Figures:
    common.recreate_database(DBNAME)
    with common.connect(DBNAME) as conn, app.open():
        app.schema_manager.apply_schema()
        figures = measure_publish(args, conn)
        with WorkerGroup(PREFIX) as workers:
            figures |= measure_e2e(args, conn, workers)
            figures |= measure_latency(args, conn, workers)
    return figures


if __name__ == "__main__":
    sys.exit(common.main(__doc__ or PREFIX, run_once))
