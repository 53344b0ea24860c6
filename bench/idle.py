"""Idle cost: database transactions of `tasker run` instances with nothing to do.

    python -m bench.idle                      # 2 instances, 3 topics, a 20 s window
    python -m bench.idle --topics 30 --window 30

Starts `--instances` real `tasker run bench.idle` processes (PostgreSQL +
RabbitMQ, as bench.run) serving `--topics` topics (TASKER_BENCH_IDLE_TOPICS
tells the module how many; each the default `spec`, one sweep a second) on a
database of its own (TASKER_BENCH_IDLE_PG, default `tasker_bench_idle`,
created and migrated if needed, its tables emptied first). Once every
instance is up and one is master, it waits `--settle` seconds, then counts
over `--window` seconds:

- `idle.xact_per_s`: transactions (pg_stat_database xact_commit +
  xact_rollback of that database) per second, all instances together, and
  `idle.xact_per_s_per_instance`. A connection's counters reach the view up
  to 10 s after its transactions (an idle backend flushes them late), hence
  the 15 s settle: the start-up's own transactions stay out of the window.
  A pool's pre-ping is a transaction of its own (an empty statement);
- `idle.statements_per_s`: statements per second from pg_stat_statements
  (when the server preloads it; CREATE EXTENSION is run here), with the
  busiest statements on stderr;
- `idle.cpu_per_instance`: CPU time per instance, in ms per second.

Then it publishes a task every 2 s, five times, and prints
`idle.first_start`: the median ms from publish to `started` (the database
clock), to show that the NOTIFY wake-up of an idle master still works.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa

from bench import publish as pub
from bench.run import BROKER_URL, ROOT, TERM_GRACE_S, _killpg, cpu_s
from tasker import Context, MsgQ, Tasker

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tasker_bench_idle"
DB_URL = os.environ.get("TASKER_BENCH_IDLE_PG", DEFAULT_URL)
TOPICS = int(os.environ.get("TASKER_BENCH_IDLE_TOPICS", "3"))


class _Idle(MsgQ):
    topic = "bench.idle._base"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def _topic_class(index: int) -> type[MsgQ]:
    return type(f"Idle{index}", (_Idle,), {"topic": f"bench.idle.{index}", "__module__": __name__})


IDLE_CLASSES = [_topic_class(i) for i in range(TOPICS)]
for _cls in IDLE_CLASSES:
    globals()[_cls.__name__] = _cls


def conninfo(url: str, database: str | None = None) -> str:
    parsed = sa.make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def xacts(admin: psycopg.Connection, name: str) -> tuple[int, int]:
    """(commits, rollbacks) of the database so far."""
    row = admin.execute(
        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", [name]
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def statements(url: str, name: str) -> dict[str, int] | None:
    """{query: calls} of this database from pg_stat_statements, or None without it."""
    try:
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = conn.execute(
                "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d "
                "ON d.oid = s.dbid WHERE d.datname = %s AND query NOT LIKE %s",
                [name, "%pg_stat_statements%"],
            ).fetchall()
    except psycopg.Error as exc:
        print(f"# no pg_stat_statements: {str(exc).splitlines()[0]}", file=sys.stderr)
        return None
    out: dict[str, int] = {}
    for query, calls in rows:
        out[query] = out.get(query, 0) + int(calls)
    return out


def start(count: int, topics: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env.update(
        TASKER_DATABASE_URL=DB_URL,
        TASKER_BROKER_URL=BROKER_URL,
        TASKER_BENCH_IDLE_TOPICS=str(topics),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    procs = []
    for index in range(count):
        with open(log_dir / f"instance-{index}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tasker.cli", "run", "bench.idle"], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))  # fmt: skip
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for p in procs:
        _killpg(p, signal.SIGTERM)
    end = time.monotonic() + TERM_GRACE_S
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, end - time.monotonic()))
    for p in procs:
        _killpg(p, signal.SIGKILL)
        p.wait()


def wait_ready(conn: psycopg.Connection, procs: list[subprocess.Popen[bytes]], log_dir: Path,
               timeout: float) -> None:  # fmt: skip
    pids = [p.pid for p in procs]
    deadline = time.monotonic() + timeout
    while True:
        n = conn.execute("SELECT count(*) FROM instance WHERE pid = ANY(%s)", [pids]).fetchone()
        master = conn.execute(
            "SELECT i.pid FROM core c JOIN instance i ON i.id = c.master_instance_id"
        ).fetchone()
        if n and n[0] == len(pids) and master and master[0] in pids:
            return
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise SystemExit(f"the instances did not start; logs in {log_dir}")
        time.sleep(0.05)


def measure(args: argparse.Namespace) -> None:
    pub.prepare(DB_URL)
    name = sa.make_url(DB_URL).database
    assert name is not None
    with psycopg.connect(conninfo(DB_URL), autocommit=True) as conn:
        conn.execute("TRUNCATE task, instance RESTART IDENTITY")
        conn.execute("UPDATE core SET master_instance_id = NULL, master_fqdn = ''")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    procs = start(args.instances, args.topics, log_dir)
    try:
        with psycopg.connect(conninfo(DB_URL), autocommit=True) as conn:
            wait_ready(conn, procs, log_dir, args.timeout)
        time.sleep(args.settle)
        pids = [p.pid for p in procs]
        with psycopg.connect(conninfo(DB_URL, "postgres"), autocommit=True) as admin:
            before_stmts = statements(DB_URL, name)
            x0, c0, t0 = xacts(admin, name), cpu_s(pids), time.monotonic()
            time.sleep(args.window)
            x1, c1, t1 = xacts(admin, name), cpu_s(pids), time.monotonic()
            after_stmts = statements(DB_URL, name)
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"an instance exited during the window; logs in {log_dir}")
        span = t1 - t0
        rate = (sum(x1) - sum(x0)) / span
        print(f"# commits {x1[0] - x0[0]}, rollbacks {x1[1] - x0[1]} in {span:.1f} s",
              file=sys.stderr)  # fmt: skip
        print(f"idle.xact_per_s: {rate:.2f} tx/s", flush=True)
        print(f"idle.xact_per_s_per_instance: {rate / args.instances:.2f} tx/s", flush=True)
        if before_stmts is not None and after_stmts is not None:
            delta = {q: n - before_stmts.get(q, 0) for q, n in after_stmts.items()}
            total = sum(delta.values())
            print(f"idle.statements_per_s: {total / span:.2f} stmt/s", flush=True)
            for query, n in sorted(delta.items(), key=lambda kv: -kv[1])[:25]:
                if n:
                    text = " ".join(query.split())[:150]
                    print(f"#   {n / span:6.2f}/s  {text}", file=sys.stderr)
        cpu = (c1 - c0) * 1000 / span / args.instances
        print(f"idle.cpu_per_instance: {cpu:.1f} ms/s", flush=True)
        print(f"idle.first_start: {first_start(args.timeout):.1f} ms", flush=True)
    finally:
        stop(procs)
    for f in log_dir.iterdir():
        f.unlink()
    log_dir.rmdir()


def first_start(timeout: float, count: int = 5, gap_s: float = 2.0) -> float:
    """Median ms from publish to `started` of `count` tasks, each published
    after `gap_s` of idle (the master's caches are stale by then)."""
    app = Tasker(DB_URL, broker=BROKER_URL)
    try:
        app.register(IDLE_CLASSES[0])
        ms = []
        for _ in range(count):
            time.sleep(gap_s)
            task_id = app.publish(IDLE_CLASSES[0]())
            app.result(task_id, timeout=timeout)
            with app.engine.connect() as conn:
                ms.append(conn.execute(
                    sa.text("SELECT extract(epoch FROM started - created) * 1000 FROM task "
                            "WHERE id = :id"), {"id": task_id}
                ).scalar_one())  # fmt: skip
        print(f"# first starts: {', '.join(f'{float(m):.1f}' for m in ms)} ms", file=sys.stderr)
        return float(statistics.median(ms))
    finally:
        app.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--topics", type=int, default=3)
    p.add_argument("--window", type=float, default=20.0, help="seconds counted")
    p.add_argument("--settle", type=float, default=15.0, help="seconds idle before counting")
    p.add_argument("--timeout", type=float, default=60.0)
    measure(p.parse_args())


if __name__ == "__main__":
    main()
