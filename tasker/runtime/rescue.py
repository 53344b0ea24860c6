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
"""

from __future__ import annotations

import logging
from typing import Any

from tasker import defaults, outcome, retry, store
from tasker.db import Database
from tasker.exceptions import LeadershipLost
from tasker.runtime.lease import Lease
from tasker.runtime.service import Fatal, Service

log = logging.getLogger(__name__)


def decide(
    row: Any, *, grace_s: float, out_of_date_ms: int, host: str | None = None
) -> outcome.Decision:
    """What a stuck, orphaned or unheeded cancelled execution becomes (pure)."""
    if row.cancel_requested is not None:
        how = "finished by the master: its instance did not stop it in time or died"
        return outcome.cancelled(attempt=row.attempts, was=None, how=how, host=host)
    if row.overdue:
        reason = f"timeout: still running {grace_s:g}s past its timeout (rescued by the master)"
    else:
        reason = (
            f"instance {row.instance_id} stopped beating for over {out_of_date_ms} ms "
            "(rescued by the master)"
        )
    return outcome.failed(
        retry_left=row.retry,
        attempt=row.attempts,
        reason=reason,
        next_delay_s=retry.backoff_s(1),
        host=host,
    )


class Rescuer(Service):
    """One rescue pass per `run_once`, every `defaults.RESCUE_INTERVAL_S` while master."""

    name = "rescue"

    def __init__(
        self,
        database: Database,
        lease: Lease,
        *,
        instance_id: Any,
        grace_s: float,
        host: str,
        on_fatal: Fatal,
        max_failures: int = defaults.RECONNECT_RETRIES,
        retry_s: float = defaults.RECONNECT_INTERVAL_S,
        interval_s: float = defaults.RESCUE_INTERVAL_S,
    ) -> None:
        super().__init__(on_fatal=on_fatal, max_failures=max_failures, retry_s=retry_s)
        self.database = database
        self.lease = lease
        self.instance_id = instance_id
        self.grace_s = grace_s
        self.host = host
        self.interval_s = interval_s
        self.rescued = 0  # rows changed by the last pass (tests read it)

    def run_once(self) -> float:
        term = self.lease.term()
        self.rescued = 0
        if term is None:
            return self.interval_s
        self.doing = "looking for stuck executions"
        try:
            self.rescued = self._rescue(term)
        except LeadershipLost as exc:
            self.lease.demote(term, str(exc))
        return self.interval_s

    def _rescue(self, term: int) -> int:
        lease = self.lease.lease_ms
        with self.database.transaction() as conn:
            rows = store.task_find_stuck(
                conn,
                grace_ms=int(self.grace_s * 1000),
                out_of_date_ms=lease,
                limit=defaults.CLAIM_BATCH,
            )
        if not rows:
            return 0
        retry_rows: list[dict[str, Any]] = []
        fail_rows: list[dict[str, Any]] = []
        for row in rows:
            d = decide(row, grace_s=self.grace_s, out_of_date_ms=lease, host=self.host)
            (fail_rows if d.transition == "fail" else retry_rows).append(
                d.row(row.id, row.worker_id, linked=row.linked)
            )
        self.doing = f"rescuing {len(rows)} task(s)"
        with self.database.transaction() as conn:
            changed = store.task_rescue_many(
                conn,
                term=term,
                instance_id=self.instance_id(),
                retry_rows=retry_rows,
                fail_rows=fail_rows,
            )
        if changed:
            log.warning(
                "rescued %d stuck or orphaned task(s): %s",
                changed,
                ", ".join(str(r.id) for r in rows[:20]),
                extra={"action": "rescued"},
            )
        return changed
