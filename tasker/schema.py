"""The tables `task`, `task_group`, `task_outbox`, `core`, `instance` and `topic`.

alembic's revisions are reviewed autogenerate output of this module, and a
test checks that the two agree. Times are stored as UTC; `UTCDateTime` hands
back aware datetimes on both PostgreSQL and SQLite.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """timestamptz on PostgreSQL, ISO text on SQLite; always aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


ID = BigInteger().with_variant(Integer, "sqlite")
NOW = text("CURRENT_TIMESTAMP")

task = Table(
    "task",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("input", Text, nullable=False),
    Column("result", Text, nullable=True),
    Column("timeout", Integer, nullable=False, comment="ms one execution may take"),
    Column("retry", Integer, nullable=False, comment="runs left; at 0 the task is failed"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("exec_after", UTCDateTime, nullable=False, server_default=NOW),
    Column("worker_id", BigInteger, nullable=False, server_default="0"),
    Column("worker_fqdn", Text, nullable=False, server_default=""),
    Column("log", Text, nullable=False, server_default=""),
    Column("errlog", Text, nullable=False, server_default=""),
    Column("created", UTCDateTime, nullable=False, server_default=NOW),
    Column("updated", UTCDateTime, nullable=False, server_default=NOW),
    Column("started", UTCDateTime, nullable=True),
    Column("finished", UTCDateTime, nullable=True),
    Column("term", BigInteger, nullable=False, server_default="0"),
    Column("token", BigInteger, nullable=True, comment="dispatch token of the live message"),
    Column("dispatched", UTCDateTime, nullable=True, comment="when the live message was sent"),
    Column("instance_id", BigInteger, nullable=True, comment="instance running it"),
    Column("periodic_at", UTCDateTime, nullable=True, comment="fire time of a periodic task"),
    Column("cancel_requested", UTCDateTime, nullable=True, comment="when an admin cancelled it"),
    Column("chain_id", BigInteger, nullable=True, comment="id of the first step of its chain"),
    Column(
        "chain_step", Integer, nullable=True, comment="1 for a chain's first step, then 2, 3..."
    ),
    Column(
        "chain_next",
        Text,
        nullable=True,
        comment="JSON list of the steps after this one",
    ),
    Column("group_id", BigInteger, nullable=True, comment="task_group.id of a group member"),
    Column("result_topic", String(200), nullable=True, comment="queue that gets the outcome"),
    Column("priority", Integer, nullable=False, server_default="0", comment="higher runs first"),
    Column("unique_key", String(255), nullable=True, comment="one live task per (topic, key)"),
    Column("expires_at", UTCDateTime, nullable=True, comment="not started by then: never runs"),
    Column("lock_key", String(255), nullable=True, comment="one running task per key, in order"),
    Column("traceparent", String(64), nullable=True, comment="W3C trace context of the publish"),
    sqlite_autoincrement=True,  # ids are never reused (DESIGN 2; migration 0010)
)

DUE_STATUSES = ["pending", "retry"]
LIVE_STATUSES = ["pending", "retry", "running"]
"""The statuses in which a unique key is held (DESIGN 2)."""

Index(
    "ix_task_due",
    task.c.topic,
    task.c.priority.desc(),
    task.c.exec_after,
    task.c.id,
    postgresql_where=task.c.status.in_(DUE_STATUSES),
    sqlite_where=task.c.status.in_(DUE_STATUSES),
)
Index(
    "ix_task_inflight",
    task.c.topic,
    task.c.dispatched,
    postgresql_where=task.c.dispatched.isnot(None),
    sqlite_where=task.c.dispatched.isnot(None),
)
Index(
    "ix_task_running",
    task.c.started,
    postgresql_where=task.c.status == "running",
    sqlite_where=task.c.status == "running",
)
# Running tasks an admin asked to stop, by instance: what each heartbeat
# reads. Rows leave it when they stop running, so it stays tiny.
CANCEL_WANTED = (task.c.status == "running") & task.c.cancel_requested.isnot(None)
Index(
    "ix_task_cancel",
    task.c.instance_id,
    postgresql_where=CANCEL_WANTED,
    sqlite_where=CANCEL_WANTED,
)
Index("ix_task_history", task.c.topic, task.c.status, task.c.created)
# Expiry and locks (DESIGN 1): partial, so a task that uses neither costs
# these indexes nothing, and rows leave them as they end. The expiry pass
# reads ix_task_expires; the claim's lock check reads ix_task_lock by key.
EXPIRING = task.c.expires_at.isnot(None) & task.c.status.in_(DUE_STATUSES)
Index("ix_task_expires", task.c.expires_at, postgresql_where=EXPIRING, sqlite_where=EXPIRING)
LOCKED = task.c.lock_key.isnot(None) & task.c.status.in_(LIVE_STATUSES)
Index(
    "ix_task_lock",
    task.c.lock_key,
    task.c.priority.desc(),
    task.c.id,
    postgresql_where=LOCKED,
    sqlite_where=LOCKED,
)
# The dashboard: task pages by status without a topic, and everything read by
# finish time (throughput, run times, purge by age). Neither holds a row as it
# is inserted (pending, unfinished), so publishing pays for neither.
Index(
    "ix_task_status_created",
    task.c.status,
    task.c.created,
    task.c.id,
    postgresql_where=task.c.status != "pending",
    sqlite_where=task.c.status != "pending",
)
Index(
    "ix_task_finished",
    task.c.finished,
    postgresql_where=task.c.finished.isnot(None),
    sqlite_where=task.c.finished.isnot(None),
)
# Partial: NULLs never collide, so only periodic tasks need an entry.
Index(
    "uq_task_periodic",
    task.c.topic,
    task.c.periodic_at,
    unique=True,
    postgresql_where=task.c.periodic_at.isnot(None),
    sqlite_where=task.c.periodic_at.isnot(None),
)
# Partial: a task outside any chain or group costs these indexes nothing.
Index(
    "uq_task_chain_step",
    task.c.chain_id,
    task.c.chain_step,
    unique=True,
    postgresql_where=task.c.chain_id.isnot(None),
    sqlite_where=task.c.chain_id.isnot(None),
)
Index(
    "ix_task_group",
    task.c.group_id,
    task.c.id,
    postgresql_where=task.c.group_id.isnot(None),
    sqlite_where=task.c.group_id.isnot(None),
)

task_group = Table(
    "task_group",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("size", Integer, nullable=False, comment="members"),
    Column("done", Integer, nullable=False, server_default="0", comment="terminal finishes seen"),
    Column("then_topic", String(200), nullable=False),
    Column("then_input", Text, nullable=False, comment="callback payload without `results`"),
    Column("then_timeout", Integer, nullable=False, comment="ms"),
    Column("then_retry", Integer, nullable=False),
    Column("then_result_topic", String(200), nullable=True),
    Column("then_priority", Integer, nullable=False, server_default="0"),
    Column("then_expires", BigInteger, nullable=True, comment="ms from when it is written"),
    Column("then_lock_key", String(255), nullable=True),
    Column("callback_id", BigInteger, nullable=True, comment="the callback task, once written"),
    Column("created", UTCDateTime, nullable=False, server_default=NOW),
    sqlite_autoincrement=True,
)

Index("ix_task_group_callback", task_group.c.callback_id)

task_outbox = Table(
    "task_outbox",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger, nullable=False),
    Column("queue", String(200), nullable=False, comment="the MsgQ's result_topic"),
    Column(
        "body", Text, nullable=False, comment='JSON {"id", "topic", "success", "error", "result"}'
    ),
    Column("taken_until", UTCDateTime, nullable=True, comment="a publisher holds it until then"),
    Column("created", UTCDateTime, nullable=False, server_default=NOW),
    sqlite_autoincrement=True,
)

Index(
    "uq_task_unique_key",
    task.c.topic,
    task.c.unique_key,
    unique=True,
    # Only keyed rows: a task without a key costs this index nothing.
    postgresql_where=task.c.unique_key.isnot(None) & task.c.status.in_(LIVE_STATUSES),
    sqlite_where=task.c.unique_key.isnot(None) & task.c.status.in_(LIVE_STATUSES),
)

core = Table(
    "core",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("master_instance_id", BigInteger, nullable=True),
    Column("master_fqdn", String(255), nullable=False, server_default=""),
    Column("updated", UTCDateTime, nullable=False, server_default=NOW),
    Column("master_out_of_date", Integer, nullable=False, server_default="6000"),
    Column("instance_heartbeat", Integer, nullable=False, server_default="3000"),
    Column("term", BigInteger, nullable=False, server_default="0"),
)

instance = Table(
    "instance",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("fqdn", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column(
        "topics",
        Text,
        nullable=False,
        server_default="{}",
        comment='JSON {"topic": {"concurrency": n, "prefetch": m}}',
    ),
    Column("started", UTCDateTime, nullable=False, server_default=NOW),
    Column("heartbeat", UTCDateTime, nullable=False, server_default=NOW),
    Column("master_eligible", Boolean, nullable=False, server_default=true()),
    sqlite_autoincrement=True,
)

topic = Table(
    "topic",
    metadata,
    Column("name", String(200), primary_key=True, autoincrement=False),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("rate_window", UTCDateTime, nullable=True, comment="start of the rate-limit window"),
    Column("rate_count", Integer, nullable=False, server_default="0", comment="claims in it"),
    Column("updated", UTCDateTime, nullable=False, server_default=NOW),
    Column(
        "periodic_last",
        UTCDateTime,
        nullable=True,
        comment="newest periodic fire time inserted",
    ),
    Column(
        "rate_tat",
        UTCDateTime,
        nullable=True,
        comment="rate limit: theoretical arrival time (GCRA)",
    ),
    Column(
        "settings",
        Text,
        nullable=True,
        comment="JSON: the serving class's settings, as an instance declared them",
    ),
    Column(
        "payload_schema",
        Text,
        nullable=True,
        comment="JSON Schema of the payload, as an instance declared it",
    ),
)
"""Per-topic state the master reads and remembers, never derived from task rows
a purge may delete: paused, the rate limit's state, the newest periodic fire
time inserted, and what the serving instances declared (settings, payload
schema). A topic without a row is not paused and has claimed nothing."""
