"""Master-only housekeeping: forget dead instances, delete old success rows.

Neither is urgent, both are bounded: instance rows dead for
`INSTANCE_FORGET_S` go once a minute; with TASKER_KEEP_SUCCESS_DAYS set,
success rows older than that go in a few short batches per pass (one short
transaction each, as River's job cleaner does), so a large history never
holds a long lock. A pass that found fewer than that has caught up: the
next looks a minute later, so a quiet cluster does not run a DELETE a
second. Retention keeps what something live still needs (a member of a
group not yet called back, a step of a chain not yet ended, a row whose
result message is unsent: `store.task_purge_batch` decides in its DELETE).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tasker import defaults, store
from tasker.db import Database
from tasker.runtime.lease import Lease
from tasker.runtime.service import Pass, Service, Supervision
from tasker.states import Status

log = logging.getLogger(__name__)

FORGET_EVERY_S = 60.0
"""How often dead instance rows are looked for."""


@dataclass(frozen=True)
class MaintenanceConfig:
    """Settings of the housekeeping (seconds, days for retention)."""

    keep_success_days: float | None = None  # None: success rows are kept
    forget_s: float = defaults.INSTANCE_FORGET_S  # a dead instance row goes after this long
    interval_s: float = defaults.RESCUE_INTERVAL_S  # between passes


@dataclass(frozen=True)
class Housekept(Pass):
    """One housekeeping pass: instance rows forgotten, success rows deleted."""

    forgotten: int = 0
    deleted: int = 0


class Maintenance(Service):
    """One housekeeping pass per `run_once` while master."""

    name = "maintenance"

    def __init__(
        self,
        database: Database,
        lease: Lease,
        supervision: Supervision,
        config: MaintenanceConfig,
    ) -> None:
        super().__init__(supervision)
        self.database = database
        self.lease = lease
        self.config = config
        self._since_forget = FORGET_EVERY_S  # the first pass as master looks at once
        self._since_retention = FORGET_EVERY_S  # likewise; 0 again once caught up

    def run_once(self) -> Housekept:
        """Forget dead instances (once a minute) and apply retention while master."""
        wait = self.config.interval_s
        if self.lease.term() is None:
            return Housekept(wait)
        forgotten = deleted = 0
        self._since_forget += wait
        if self._since_forget >= FORGET_EVERY_S:
            self.doing = "forgetting dead instances"
            forgotten = self.forget_dead()
            self._since_forget = 0.0
        self._since_retention += wait
        if self.config.keep_success_days and self._since_retention >= FORGET_EVERY_S:
            self.doing = "deleting old success rows"
            deleted = self.retention()
            full = defaults.RETENTION_BATCH * defaults.RETENTION_BATCHES_PER_PASS
            self._since_retention = FORGET_EVERY_S if deleted >= full else 0.0
        return Housekept(wait, forgotten, deleted)

    def forget_dead(self) -> int:
        """Delete instance rows that have not beaten for `forget_s`; how many."""
        older_than_ms = int(self.config.forget_s * 1000)
        with self.database.transaction() as conn:
            gone = store.instance_forget_dead(conn, older_than_s=older_than_ms / 1000)
        if gone:
            log.info("forgot %d dead instance row(s)", gone, extra={"action": "forgot"})
        return gone

    def retention(self) -> int:
        """Delete success rows older than TASKER_KEEP_SUCCESS_DAYS, a few short batches."""
        keep_ms = round((self.config.keep_success_days or 0) * 86_400_000)
        deleted = 0
        for _ in range(defaults.RETENTION_BATCHES_PER_PASS):
            with self.database.transaction() as conn:
                n = _purge(conn, keep_ms)
            deleted += n
            if n < defaults.RETENTION_BATCH:
                break
        if deleted:
            log.info("retention deleted %d success row(s)", deleted, extra={"action": "retention"})
        return deleted


def _purge(conn: Any, keep_ms: int) -> int:
    return store.task_purge_batch(
        conn, statuses=[Status.SUCCESS], older_than_s=keep_ms / 1000, limit=defaults.RETENTION_BATCH
    )
