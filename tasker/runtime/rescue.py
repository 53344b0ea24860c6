"""Master-only: give stuck and orphaned executions back.

Protocol (DESIGN 5, rescue). A `running` row is stuck when it is past its
timeout plus a grace, and orphaned when its instance stopped beating
(declared dead after `master_out_of_date`). Either way it goes to `retry`
(or `failed` when no runs remain) through the same pure decision consumers
use, guarded by the execution's worker id and fenced by the master's term,
so a task that finished meanwhile is never touched. An orphan is retried
after the first, short back-off, not after its timeout. A row an admin
cancelled is never retried: it ends `failed`, cancelled (River's rescuer
does the same with a job whose cancel was attempted); one whose live
instance did not finish it within the lease plus the grace is finished here.

Each pass also ends the tasks whose `expires` passed before they started
(`store.task_expire_due`: one probe of an index that is empty while no task
expires), so an expired task settles even while its topic is paused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tasker import defaults, outcome, store
from tasker.db import Database
from tasker.exceptions import LeadershipLost
from tasker.runtime.lease import Lease
from tasker.runtime.service import InstanceId, Pass, Service, Supervision

log = logging.getLogger(__name__)


def decide(
    row: Any, *, grace_s: float, out_of_date_ms: int, host: str | None = None
) -> outcome.Decision:
    """What a stuck, orphaned or unheeded cancelled execution becomes (pure);
    `row` is one of `store.task_find_stuck`'s."""
    if row.overdue:
        reason = f"timeout: still running {grace_s:g}s past its timeout (rescued by the master)"
    else:
        reason = (
            f"instance {row.instance_id} stopped beating for over {out_of_date_ms} ms "
            "(rescued by the master)"
        )
    return outcome.decide(
        outcome.Ended.rescued(reason),
        attempt=row.attempts,
        runs_left=row.retry,
        cancel=row.cancel_requested is not None,
        host=host,
    )


@dataclass(frozen=True)
class RescuerConfig:
    """Settings of the rescuer (seconds)."""

    grace_s: float  # how long past its timeout a running task is left alone
    host: str  # this instance's name, written into the rescued rows' log
    interval_s: float = defaults.RESCUE_INTERVAL_S  # between passes


@dataclass(frozen=True)
class Rescued(Pass):
    """One rescue pass: how many rows it changed."""

    rescued: int = 0
    expired: int = 0


class Rescuer(Service):
    """One rescue pass per `run_once`, every `config.interval_s` while master."""

    name = "rescue"

    def __init__(
        self,
        database: Database,
        lease: Lease,
        supervision: Supervision,
        config: RescuerConfig,
        *,
        instance_id: InstanceId,
    ) -> None:
        super().__init__(supervision)
        self.database = database
        self.lease = lease
        self.config = config
        self.instance_id = instance_id

    def run_once(self) -> Rescued:
        """Rescue one batch while master; how many rows changed."""
        wait = self.config.interval_s
        term = self.lease.term()
        if term is None:
            return Rescued(wait)
        self.doing = "looking for stuck executions"
        try:
            rescued = self._rescue(term)
            self.doing = "ending expired tasks"
            return Rescued(wait, rescued, self._expire())
        except LeadershipLost as exc:
            self.lease.demote(term, str(exc))
        return Rescued(wait)

    def _expire(self) -> int:
        """End the tasks whose `expires` passed before they started."""
        note = outcome.expired_note(host=self.config.host)
        with self.database.transaction() as conn:
            ids = store.task_expire_due(conn, note=note, limit=defaults.CLAIM_BATCH)
        if ids:
            log.info(
                "%d task(s) expired before they started: %s", len(ids),
                ", ".join(str(i) for i in ids[:20]), extra={"action": "task_expired"},
            )  # fmt: skip
        return len(ids)

    def _rescue(self, term: int) -> int:
        lease = self.lease.lease_ms
        with self.database.transaction() as conn:
            rows = store.task_find_stuck(
                conn,
                grace_s=self.config.grace_s,
                out_of_date_s=lease / 1000,
                limit=defaults.CLAIM_BATCH,
            )
        if not rows:
            return 0
        cfg = self.config
        finishes = []
        for row in rows:
            d = decide(row, grace_s=cfg.grace_s, out_of_date_ms=lease, host=cfg.host)
            finishes.append(store.Finish(row.id, row.worker_id, d, linked=row.linked))
        self.doing = f"rescuing {len(rows)} task(s)"
        with self.database.transaction() as conn:
            changed = store.task_rescue_many(
                conn,
                term=term,
                instance_id=self.instance_id(),
                finishes=finishes,
            )
        if changed:
            log.warning(
                "rescued %d stuck or orphaned task(s): %s",
                changed,
                ", ".join(str(r.id) for r in rows[:20]),
                extra={"action": "rescued"},
            )
        return changed
