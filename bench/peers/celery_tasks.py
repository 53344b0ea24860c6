"""Celery app and tasks for the peer benchmark (loaded by the worker CLI).

Workers run as ``celery -A celery_tasks worker`` with this directory on PYTHONPATH.
Broker: RabbitMQ on the default vhost, with a queue of our own; results go to
PostgreSQL through Celery's SQLAlchemy ("db+") backend, so every task is on record.
"""

from __future__ import annotations

import time

from celery import Celery

from common import PG_HOST, PG_PORT, PG_USER, StartRecorder, dsn

DBNAME = "bench_celery"
QUEUE = "bench_celery"
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
RESULT_DB_URL = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{DBNAME}"

app = Celery("bench_celery", broker=BROKER_URL, backend=f"db+{RESULT_DB_URL}")
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=False,  # persist the result (row in celery_taskmeta) on success
    task_track_started=False,  # no extra STARTED write
    broker_connection_retry_on_startup=True,
)
_recorder = StartRecorder(dsn(DBNAME))


@app.task(name="noop")
def noop(i: int) -> None:
    """The throughput workload: does nothing with its one int field."""


@app.task(name="stamp")
def stamp(i: int) -> None:
    """The latency workload: stores when it started, in ``lat``."""
    _recorder.record(i, time.time())
