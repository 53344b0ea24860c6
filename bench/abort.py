"""Abort latency: from `admin.cancel` returning to the row `failed`, per kind of execution.

    python -m bench.abort                  # PostgreSQL + RabbitMQ, then the embedded default
    python -m bench.abort --repeat 10

One real `tasker run bench.abort` process per backend serves three topics: a
thread task that calls `ctx.check()` every 10 ms (`steps`), a thread task
that never looks (`deaf`: abandoned after the grace) and a process-isolated
one that spins (`child`: killed). Each is published, cancelled once it runs,
and timed until its row is `failed`; figures are the median and the worst
of `--repeat` cancels, in ms, as `name: value unit` lines. The contract is
"within two heartbeats" (6000 ms by default); PostgreSQL is woken by NOTIFY,
the embedded default learns at its instance's next beat (up to 3300 ms).
Uses TASKER_BENCH_PG / TASKER_BENCH_BROKER as bench.run does.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import publish as pub
from tasker import Context, MsgQ, Tasker, admin

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("TASKER_BENCH_PG", pub.DEFAULT_URL)
BROKER_URL = os.environ.get("TASKER_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")


class Steps(MsgQ):
    topic = "bench.abort.steps"
    timeout = 600.0
    spec = 0.1

    def exec(self, ctx: Context, worker_id: int) -> object:
        while True:
            ctx.check()
            time.sleep(0.01)


class Deaf(MsgQ):
    topic = "bench.abort.deaf"
    timeout = 600.0
    spec = 0.1

    def exec(self, ctx: Context, worker_id: int) -> object:
        time.sleep(600)
        return None


class Child(MsgQ):
    topic = "bench.abort.child"
    timeout = 600.0
    spec = 0.1
    isolation = "process"

    def exec(self, ctx: Context, worker_id: int) -> object:
        while True:
            pass


KINDS: dict[str, type[MsgQ]] = {"steps": Steps, "deaf": Deaf, "child": Child}


def wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"bench.abort: timed out waiting for {what}")
        time.sleep(0.005)


def status(app: Tasker, task_id: int) -> str:
    return str(admin.get_task(app, task_id)["status"])


def measure(label: str, db_url: str, broker_url: str, repeat: int) -> None:
    app = Tasker(db_url, broker=broker_url)
    app.register(*KINDS.values())
    env = {**os.environ, "TASKER_DATABASE_URL": db_url, "TASKER_BROKER_URL": broker_url,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with tempfile.TemporaryFile() as log:
        argv = [sys.executable, "-m", "tasker.cli", "run", "bench.abort"]
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            for kind, cls in KINDS.items():
                took = []
                for _ in range(repeat):
                    tid = app.publish(cls())
                    wait(lambda tid=tid: status(app, tid) == "running", 60, f"{kind} to run")
                    time.sleep(0.05)  # let the execution begin (the start is written first)
                    t0 = time.perf_counter()
                    assert admin.cancel_tasks(app, [tid]).requested == [tid]
                    wait(lambda tid=tid: status(app, tid) == "failed", 30, f"{kind} to fail")
                    took.append((time.perf_counter() - t0) * 1000)
                print(f"abort.{label}.{kind}_median: {statistics.median(took):.0f} ms", flush=True)
                print(f"abort.{label}.{kind}_max: {max(took):.0f} ms", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            app.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="cancels per kind and backend")
    args = parser.parse_args(argv)
    pub.prepare(PG_URL)
    app = Tasker(PG_URL)
    with app.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE task RESTART IDENTITY")
        conn.exec_driver_sql("DELETE FROM instance")
    app.close()
    measure("pg", PG_URL, BROKER_URL, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{tmp}/tasker.db"
        _migrate(sqlite_url)
        measure("embedded", sqlite_url, f"filesystem://{tmp}/broker", args.repeat)


def _migrate(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


if __name__ == "__main__":
    main()
