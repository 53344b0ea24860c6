"""Master-only: one task per fire time of each class's `periodic` cron.

Protocol (DESIGN 7, periodic tasks). At each fire time the master inserts
one task whose `periodic_at` is that time; the unique key on (topic,
periodic_at) makes the insert idempotent, so however many masters come and
go, a fire time yields one task (procrastinate's periodic deferrer works
the same way). Fire times come from `tasker.cron` (the class's `timezone`);
which to insert is `cron.plan_fire_times`, from the newest fire time the
master remembers in `topic.periodic_last` (never from surviving task rows,
which a purge may delete): on-time fire times always, a backlog missed while
no master ran as the class's `catch_up` says. The rows and the remembered
fire time are written in one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasker import cron, store
from tasker.db import Database
from tasker.exceptions import ConfigurationError, LeadershipLost
from tasker.msgq import MsgQ
from tasker.runtime.lease import Lease
from tasker.runtime.service import InstanceId, Pass, Service, Supervision

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
        "timeout_s": cls.timeout,
        "retry": cls.retry,
        "exec_after": at,
        "delay_s": 0,
        "periodic_at": at,
        "result_topic": cls.result_topic,
        "priority": cls.priority,
    }


@dataclass(frozen=True)
class Inserted(Pass):
    """One periodic pass: how many new tasks it inserted."""

    inserted: int = 0


class PeriodicInserter(Service):
    """Inserts due periodic tasks while master; woken at once on election."""

    name = "periodic"

    def __init__(
        self,
        database: Database,
        lease: Lease,
        supervision: Supervision,
        *,
        classes: list[type[MsgQ]],
        instance_id: InstanceId,
        on_inserted: Callable[[str], None],
    ) -> None:
        super().__init__(supervision)
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

    def run_once(self) -> Inserted:
        """Insert what is due; how many were new, and the seconds until the
        next fire time (at most 1 s)."""
        if not self.classes:
            return Inserted(3600.0)
        term = self.lease.term()
        if term is None:
            self._term = None
            return Inserted(1.0)
        now = dt.datetime.now(dt.timezone.utc)
        if term != self._term:  # a new term: look for missed fire times at once
            self._next.clear()
        inserted = 0
        for cls in self.classes:
            at = self._next.get(cls.topic)
            if at is None or at <= now:
                self.doing = f"inserting periodic tasks of {cls.topic!r}"
                try:
                    inserted += self.insert_due(cls, term, now)
                except LeadershipLost as exc:
                    self.lease.demote(term, str(exc))
                    return Inserted(1.0, inserted)
                nxt = self.schedules[cls.topic].next_after(now)
                self._next[cls.topic] = nxt or now + dt.timedelta(days=3650)
        self._term = term
        soonest = min(self._next.values())
        wait = (soonest - dt.datetime.now(dt.timezone.utc)).total_seconds()
        return Inserted(min(1.0, max(0.0, wait)), inserted)

    def insert_due(self, cls: type[MsgQ], term: int, now: dt.datetime) -> int:
        """Insert the fire times of `cls` due at `now` (idempotent, fenced by
        `term`) and remember the newest in `topic`, in one transaction; how
        many rows were new. LeadershipLost when `term` is over."""
        schedule = self.schedules[cls.topic]
        with self.database.transaction() as conn:
            last = kept = store.topic_periodic_last(conn, name=cls.topic)
            if kept is None:  # upgraded from a release that kept nothing in `topic`
                last = store.task_last_periodic(conn, topic=cls.topic)
            plan = cron.plan_fire_times(schedule, cls.timezone, last, now, cls.catch_up)
            inserted = 0
            if not plan.insert and plan.remember in (None, kept):
                return 0
            store.core_fence(conn, term=term, instance_id=self.instance_id())
            for at in plan.insert:
                row = periodic_row(cls, at)
                new = store.task_insert_periodic(
                    conn, row=row, term=term, instance_id=self.instance_id()
                )
                inserted += new is not None
            if plan.remember is not None:
                store.topic_set_periodic_last(conn, name=cls.topic, at=plan.remember)
        if inserted:
            self.on_inserted(cls.topic)
        return inserted
