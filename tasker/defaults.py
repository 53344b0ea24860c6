"""Every tunable of tasker in one place, with its unit in its name.

Durations in Python are float seconds; the database keeps milliseconds and
only `store` converts between the two.
"""

from __future__ import annotations

DATABASE_URL = "sqlite:///tasker.db"
"""Embedded default database: a SQLite file in the working directory."""

BROKER_URL = "filesystem://.tasker-broker"
"""Embedded default broker: a kombu transport on a folder, shared by every
process on this machine; no server to start."""

TASK_TIMEOUT_S = 5.0
"""How long one execution may run before it counts as a `timeout` failure."""

TASK_RETRY = 3
"""Runs a task may use: each failure takes one, at 0 the task is `failed`."""

TOPIC_CONCURRENCY = 1
"""Executions of one topic at once in one instance."""

TOPIC_SPEC = "*/1 * * * * *"
"""How often the master sweeps a topic (6-field cron, seconds first)."""

MASTER_OUT_OF_DATE_MS = 6000
"""Lease length: a master that has not renewed for this long may be replaced,
and an instance that has not beaten for this long counts as dead."""

INSTANCE_HEARTBEAT_MS = 3000
"""How often each instance beats (and races for the lease)."""

LEASE_SAFETY_MARGIN = 0.25
"""Fraction of the lease a master gives up early: it demotes itself at
75 % of the lease after its last successful renewal began."""

PREFETCH = None
"""Tasks dispatched ahead of free slots per consumer and topic. None = auto:
one `concurrency` until the topic's executions are timed here, then enough
for about `AHEAD_BUDGET_S` of queued work per slot, between one
`concurrency` and `AUTO_PREFETCH_MAX`."""

AUTO_PREFETCH_MAX = 256
"""Upper bound of the automatic prefetch (short tasks reach it)."""

AHEAD_BUDGET_S = 0.5
"""Automatic prefetch: queued work per execution slot, in seconds."""

REDELIVERY_WINDOW_S = 15.0
"""A dispatched task not taken within this (plus the topic's timeout) is
dispatched again with a new token."""

RESCUE_GRACE_S = 5.0
"""Added to a task's timeout before the master rescues it as stuck."""

RESCUE_INTERVAL_S = 1.0
"""How often the master looks for stuck tasks and dead instances."""

IDLE_RECHECK_S = 10.0
"""On PostgreSQL with a live LISTEN, the longest an idle master goes without
reading a topic that had nothing due (a NOTIFY, or the time its next task
falls due, comes first), or without a rescue pass while nothing runs. Only
writes made without `pg_notify` (plain SQL) wait for it."""

INSTANCE_FORGET_S = 3600.0
"""Rows of instances dead for this long are deleted by the master."""

BACKLOG_POLL_S = 0.005
"""When a sweep was cut short by capacity, sweep again after this long."""

BACKLOG_PACE_S = 0.005
"""A topic whose consumers hold work ahead of their slots (a prefetch) and
whose sweep ran out of capacity is swept again after this long, not at each
freed slot: fewer, larger claims, each a fixed cost in the database, while
the prefetched work keeps every slot busy (PERFORMANCE.md)."""

SHUTDOWN_GRACE_S = 30.0
"""On SIGTERM, how long running executions may finish before hand-back."""

RECONNECT_RETRIES = 20
"""Tries to reach the broker or database again before giving up loudly."""

RECONNECT_INTERVAL_S = 2.0
"""Wait between those tries (grows by half each time, capped at 5 s).
20 tries ride out an outage of well over a minute."""

BACKOFF_BASE_S = 1.0
"""First back-off after a failure; doubles with each failure."""

BACKOFF_MAX_S = 300.0
"""Back-off never exceeds this."""

BACKOFF_JITTER = 0.2
"""Back-off is spread by +/- this fraction so retries do not stampede."""

CLAIM_BATCH = 500
"""Rows one claim statement may take."""

MAX_TASKS_PER_MESSAGE = 64
"""Upper bound on (id, token) pairs one message carries."""

RESULT_POLL_S = 0.05
"""How often `Tasker.result` looks at the row."""

RETENTION_BATCH = 1000
"""Rows one retention DELETE may remove (one short transaction each)."""

RETENTION_BATCHES_PER_PASS = 5
"""Retention batches per rescue pass (about one pass a second)."""

AHEAD_MAX_EXEC_S = 0.1
"""A consumer starts tasks ahead of its free slots (up to the prefetch) only
for topics whose executions take less than this here: one write then
starts a whole batch, and a task started ahead waits only briefly."""

CANCEL_GRACE_S = 1.0
"""A thread execution an admin cancelled that has not ended this long after
the request reached it is abandoned (recorded as cancelled, slot freed),
as a timed-out one is."""

CANCEL_POLL_S = 0.05
"""How often a worker waiting on a process-isolated execution checks for a
cancel request (the child is then killed)."""

MAX_TIMEOUT_S = (2**31 - 1) / 1000
"""The longest `timeout` a task may have (the column holds int4 milliseconds):
about 24.8 days."""

MAX_RETRY = 2**31 - 1
"""The most runs a task may be given (the column is int4)."""

PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
"""The range of a task's `priority` (the column is int4)."""

MAX_ROWS = 2**63 - 1
"""The largest row count a listing or a purge batch may ask for (LIMIT is a
64-bit integer on both databases)."""
