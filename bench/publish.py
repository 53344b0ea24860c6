"""Publish throughput against PostgreSQL: one task per call, and batches.

    python -m bench.publish --n 100000

Prints `name: value unit` lines, each the median of --runs runs:
publish_single (app.publish in a loop), publish_many (batches of --batch),
publish_many_one_batch (all --n in one call) and store_task_insert_many (the
database part of publish_many alone, rows encoded beforehand). The database
(TASKER_BENCH_PG, default below) is created and migrated if needed, and the
task table is truncated before every run. The broker is never touched:
publishing only writes the database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tasker import MsgQ, Tasker, store

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tasker_bench"


class Bench(MsgQ):
    topic = "bench.publish"
    n: int

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return self.n


def prepare(url: str) -> None:
    """Create the database if it is missing, then upgrade it to head."""
    parsed = sa.make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
        found = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,))
        if found.fetchone() is None:
            c.execute(f'CREATE DATABASE "{parsed.database}"')
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


def truncate(app: Tasker) -> None:
    with app.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE task RESTART IDENTITY")


def median_rate(
    app: Tasker, runs: int, msgs: list[Bench], fn: Callable[[list[Bench]], None]
) -> float:
    """Tasks/s of `fn(msgs)`, median of `runs`; building the messages is not timed."""
    rates = []
    for _ in range(runs):
        truncate(app)
        t0 = time.perf_counter()
        fn(msgs)
        rates.append(len(msgs) / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="tasks per publish_many run")
    parser.add_argument("--single", type=int, default=3000, help="tasks per publish run")
    parser.add_argument("--batch", type=int, default=10_000, help="publish_many batch size")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    url = os.environ.get("TASKER_BENCH_PG", DEFAULT_URL)
    prepare(url)
    with tempfile.TemporaryDirectory() as tmp:
        app = Tasker(url, broker=f"filesystem://{tmp}/broker")
        app.register(Bench)
        try:
            run(app, args)
        finally:
            app.close()


def run(app: Tasker, args: argparse.Namespace) -> None:
    def single(msgs: list[Bench]) -> None:
        for m in msgs:
            app.publish(m)

    def batched(msgs: list[Bench]) -> None:
        for start in range(0, len(msgs), args.batch):
            app.publish_many(msgs[start : start + args.batch])

    def one_batch(msgs: list[Bench]) -> None:
        app.publish_many(msgs)

    def store_only(msgs: list[Bench]) -> None:
        # The database part of publish_many alone: rows encoded beforehand.
        rows = encoded[: len(msgs)]
        for start in range(0, len(rows), args.batch):
            with app.transaction() as conn:
                store.task_insert_many(conn, rows=rows[start : start + args.batch])

    encoded = [app._row(Bench(n=i), None, None, None) for i in range(args.n)]
    figures = [
        ("publish_single", args.single, single),
        ("publish_many", args.n, batched),
        ("publish_many_one_batch", args.n, one_batch),
        ("store_task_insert_many", args.n, store_only),
    ]
    for name, n, fn in figures:
        rate = median_rate(app, args.runs, [Bench(n=i) for i in range(n)], fn)
        print(f"{name}: {rate:.0f} tasks/s", flush=True)
    truncate(app)


if __name__ == "__main__":
    main()
