"""procrastinate app and tasks for the peer benchmark (loaded by the worker CLI).

Workers run as ``procrastinate --app=procrastinate_tasks.app worker`` with this
directory on PYTHONPATH.
"""

from __future__ import annotations

import time

import procrastinate

from common import StartRecorder, dsn

DBNAME = "bench_procrastinate"

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn(DBNAME)))
_recorder = StartRecorder(dsn(DBNAME))


@app.task(name="noop")
def noop(i: int) -> None:
    """The throughput workload: does nothing with its one int field."""


@app.task(name="stamp")
def stamp(i: int) -> None:
    """The latency workload: stores when it started, in ``lat``."""
    _recorder.record(i, time.time())
