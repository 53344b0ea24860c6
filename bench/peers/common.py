"""Shared helpers for the peer benchmarks (procrastinate and Celery).

Timing, percentiles, PostgreSQL set-up and polling, worker process control and
the ``name: value unit`` output live here so that both peers are measured by
exactly the same code.  This module is also imported by the worker-side task
modules, so it must stay light (psycopg and the standard library only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import psycopg
from psycopg import sql

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PEERS_DIR = Path(__file__).resolve().parent
POLL_INTERVAL_S = 0.05
TERMINATE_GRACE_S = 5.0
LAT_TABLE_DDL = "CREATE TABLE lat (id int, started double precision)"

Figures = dict[str, "Figure"]


def dsn(dbname: str) -> str:
    """libpq connection string for one database of the local server."""
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


# --------------------------------------------------------------------------- errors


class PhaseTimeout(Exception):
    """A phase ran past its deadline; ``name`` is the figure it was measuring."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class WorkerDied(Exception):
    """A worker process exited while the benchmark still needed it."""


@dataclass
class Deadline:
    """Wall-clock budget of one phase, named after the figure it measures."""

    name: str
    end: float

    @classmethod
    def after(cls, name: str, seconds: float) -> Deadline:
        return cls(name, time.monotonic() + seconds)

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise PhaseTimeout(self.name)


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str

    def render(self) -> str:
        digits = 1 if self.unit == "ms" else 0
        return f"{self.value:.{digits}f} {self.unit}"


def rate(name: str, count: int, seconds: float) -> Figures:
    return {name: Figure(count / seconds, "tasks/s")}


def percentile(values: Sequence[float], pct: float) -> float:
    """Percentile with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * pct / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_figures(prefix: str, latencies_ms: Sequence[float]) -> Figures:
    return {
        f"{prefix}.latency_p{pct}": Figure(percentile(latencies_ms, pct), "ms")
        for pct in (50, 95, 99)
    }


def median_figures(runs: Sequence[Figures]) -> Figures:
    names = runs[0].keys()
    return {
        name: Figure(statistics.median(r[name].value for r in runs), runs[0][name].unit)
        for name in names
    }


def print_figures(figures: Figures, stream: IO[str] = sys.stdout) -> None:
    for name, figure in figures.items():
        print(f"{name}: {figure.render()}", file=stream, flush=True)


# --------------------------------------------------------------------------- database


def recreate_database(dbname: str) -> None:
    """Drop (kicking out any leftover session) and create ``dbname``, plus ``lat``."""
    ident = sql.Identifier(dbname)
    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    with psycopg.connect(dsn(dbname), autocommit=True) as conn:
        conn.execute(LAT_TABLE_DDL)


def connect(dbname: str) -> psycopg.Connection:
    """Autocommit connection: every poll sees the latest committed state."""
    return psycopg.connect(dsn(dbname), autocommit=True)


def scalar(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_count(
    conn: psycopg.Connection,
    query: str,
    target: int,
    deadline: Deadline,
    workers: WorkerGroup,
) -> None:
    """Poll ``query`` (a count) every 50 ms until it reaches ``target``."""
    while scalar(conn, query) < target:
        workers.check_alive()
        deadline.check()
        time.sleep(POLL_INTERVAL_S)


def read_starts(conn: psycopg.Connection) -> dict[int, float]:
    return dict(conn.execute("SELECT id, started FROM lat").fetchall())


class StartRecorder:
    """Worker side: store when a task began, in ``lat``.

    One lazily opened connection per process (re-opened after a fork), shared
    by the threads of that process under a lock.
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._pid = 0

    def record(self, task_id: int, started: float) -> None:
        with self._lock:
            conn = self._connection()
            conn.execute("INSERT INTO lat (id, started) VALUES (%s, %s)", (task_id, started))

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._pid = os.getpid()
        return self._conn


# --------------------------------------------------------------------------- timing


def timed_loop(items: Iterable[int], step: Callable[[int], None], deadline: Deadline) -> float:
    """Run ``step`` on each item, checking the deadline; return elapsed seconds."""
    start = time.perf_counter()
    for item in items:
        step(item)
        deadline.check()
    return time.perf_counter() - start


def publish_paced(
    publish: Callable[[int], None], count: int, interval_s: float, deadline: Deadline
) -> dict[int, float]:
    """Publish ``count`` tasks, one every ``interval_s``; return id -> publish time.

    The publish time is taken with ``time.time()`` just before the publish call,
    the same clock the task uses for its start time.
    """
    published: dict[int, float] = {}
    origin = time.monotonic()
    for task_id in range(count):
        pause = origin + task_id * interval_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        published[task_id] = time.time()
        publish(task_id)
        deadline.check()
    return published


def latencies_ms(published: dict[int, float], started: dict[int, float]) -> list[float]:
    return [(started[i] - published[i]) * 1000.0 for i in published if i in started]


# --------------------------------------------------------------------------- processes


class WorkerGroup:
    """Worker OS processes, each in its own session so its children die with it.

    Their output goes to log files in a temporary folder, removed after a clean run.
    """

    def __init__(self, label: str) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], name: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PEERS_DIR), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=PEERS_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs.append(proc)

    def check_alive(self) -> None:
        for proc in self._procs:
            if proc.poll() is not None:
                raise WorkerDied(
                    f"worker {proc.args!r} exited with {proc.returncode}; logs in {self.log_dir}"
                )

    def stop(self) -> None:
        """SIGTERM every group, wait up to 5 s, then SIGKILL whatever is left."""
        for proc in self._procs:
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + TERMINATE_GRACE_S
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, end - time.monotonic()))
        for proc in self._procs:
            _signal_group(proc, signal.SIGKILL)  # pool children outliving their parent
            proc.wait()
        self._procs.clear()

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.stop()
        if exc_type is None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        else:
            print(f"worker logs kept in {self.log_dir}", file=sys.stderr)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # pgid == pid: start_new_session=True


# --------------------------------------------------------------------------- command line


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=5000, help="tasks per throughput phase")
    parser.add_argument("--workers", type=int, default=1, help="worker OS processes")
    parser.add_argument("--runs", type=int, default=1, help="each figure is the median")
    parser.add_argument("--concurrency", type=int, default=8, help="per worker process")
    parser.add_argument("--latency-tasks", type=int, default=300)
    parser.add_argument("--latency-interval-ms", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per phase")
    return parser.parse_args()


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(description: str, run_once: Callable[[argparse.Namespace], Figures]) -> int:
    """Run the benchmark ``--runs`` times and print the median of each figure.

    On a phase deadline prints ``name: timeout`` and returns 1.  SIGTERM is turned
    into SystemExit so that the ``finally`` blocks stopping workers still run.
    """
    signal.signal(signal.SIGTERM, _raise_exit)
    args = parse_args(description)
    runs: list[Figures] = []
    try:
        for index in range(args.runs):
            runs.append(run_once(args))
            if args.runs > 1:
                print(f"# run {index + 1}/{args.runs}", file=sys.stderr)
                print_figures(runs[-1], sys.stderr)
    except PhaseTimeout as exc:
        print(f"{exc.name}: timeout", flush=True)
        return 1
    except WorkerDied as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_figures(median_figures(runs))
    return 0
