"""Master-only: one task per fire time of each class's `periodic` cron.

Protocol (DESIGN 7, periodic tasks). At each fire time the master inserts
one task whose `periodic_at` is that time; the unique key on (topic,
periodic_at) makes the insert idempotent, so however many masters come and
go, a fire time yields one task (procrastinate's periodic deferrer works
the same way). Fire times come from `tasker.cron` (the class's `timezone`);
which to insert after the newest `periodic_at` in the table is
`cron.fire_times_to_insert`: fire times of the last minute always, older ones
(missed while no master ran) as the class's `catch_up` says.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from tasker import cron, defaults, store
from tasker.db import Database
from tasker.exceptions import ConfigurationError, LeadershipLost
from tasker.msgq import MsgQ
from tasker.runtime.lease import Lease
from tasker.runtime.service import Fatal, Service

log = logging.getLogger(__name__)


def periodic_row(cls: type[MsgQ], at: dt.datetime) -> dict[str, Any]:
    """The row of `cls`'s periodic task for fire time `at`; ConfigurationError
    when a field has no default (a periodic task has no publisher to give it)."""
    try:
        text = cls().encode()
    except TypeError as exc:
        raise ConfigurationError(
            f"{cls.topic}: periodic tasks need defaults for every field ({exc})"
        ) from None
    return {
        "topic": cls.topic,
        "input": text,
        "timeout": round(cls.timeout * 1000),
        "retry": cls.retry,
        "exec_after": at,
        "delay_ms": 0,
        "periodic_at": at,
        "result_topic": cls.result_topic,
        "priority": cls.priority,
    }


class PeriodicInserter(Service):
    """Inserts due periodic tasks while master; woken at once on election."""

    name = "periodic"

    def __init__(
        self,
        database: Database,
        lease: Lease,
        *,
        classes: list[type[MsgQ]],
        instance_id: Any,
        on_inserted: Any,
        on_fatal: Fatal,
        max_failures: int = defaults.RECONNECT_RETRIES,
        retry_s: float = defaults.RECONNECT_INTERVAL_S,
    ) -> None:
        super().__init__(on_fatal=on_fatal, max_failures=max_failures, retry_s=retry_s)
        self.database = database
        self.lease = lease
        self.classes = [c for c in classes if c.periodic is not None]
        self.schedules = {
            c.topic: cron.parse(c.periodic, c.timezone, where=f"{c.topic}.periodic")
            for c in self.classes
        }
        self.instance_id = instance_id
        self.on_inserted = on_inserted
        self._term: int | None = None
        self._next: dict[str, dt.datetime] = {}
        now = dt.datetime.now(dt.timezone.utc)
        for cls in self.classes:
            periodic_row(cls, now)  # fail at start on missing defaults

    def run_once(self) -> float:
        """Insert what is due; returns seconds until the next fire time (at most 1 s)."""
        if not self.classes:
            return 3600.0
        term = self.lease.term()
        if term is None:
            self._term = None
            return 1.0
        now = dt.datetime.now(dt.timezone.utc)
        if term != self._term:  # a new term: look for missed fire times at once
            self._next.clear()
        for cls in self.classes:
            at = self._next.get(cls.topic)
            if at is None or at <= now:
                self.doing = f"inserting periodic tasks of {cls.topic!r}"
                try:
                    self.insert_due(cls, term, now)
                except LeadershipLost as exc:
                    self.lease.demote(term, str(exc))
                    return 1.0
                nxt = self.schedules[cls.topic].next_after(now)
                self._next[cls.topic] = nxt or now + dt.timedelta(days=3650)
        self._term = term
        soonest = min(self._next.values())
        return min(1.0, max(0.0, (soonest - dt.datetime.now(dt.timezone.utc)).total_seconds()))

    def insert_due(self, cls: type[MsgQ], term: int, now: dt.datetime) -> int:
        """Insert the fire times of `cls` due at `now` (idempotent); how many were new."""
        with self.database.transaction() as conn:
            last = store.task_last_periodic(conn, topic=cls.topic)
        inserted = 0
        schedule = self.schedules[cls.topic]
        for at in cron.fire_times_to_insert(schedule, cls.timezone, last, now, cls.catch_up):
            with self.database.transaction() as conn:
                inserted += bool(
                    store.task_insert_periodic(
                        conn, row=periodic_row(cls, at), term=term, instance_id=self.instance_id()
                    )
                )
        if inserted:
            self.on_inserted(cls.topic)
        return inserted
