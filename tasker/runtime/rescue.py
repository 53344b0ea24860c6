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
expires), so an expired task settles even while its topic is paused. Both
reads are one transaction.

Idle (PostgreSQL with a live LISTEN, `listening`): a pass that found no task
running or in flight (`store.task_rescue_outlook`) rests until the next
`expires_at` or `IDLE_RECHECK_S`, since nothing can be stuck or orphaned
before a task is dispatched; `touch()` (a dispatch by this master, any
publish NOTIFY, a new LISTEN) and a new term end the rest at the next
one-second pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
    recheck_s: float | None = None  # the longest rest while idle (None: IDLE_RECHECK_S)


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
        listening: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(supervision)
        self.database = database
        self.lease = lease
        self.config = config
        self.instance_id = instance_id
        self.listening = listening
        self._term: int | None = None
        self._touches = 0  # grows with each `touch`
        self._touch_lock = threading.Lock()
        self._rest_until = 0.0  # no pass before (monotonic), while idle
        self.outlook: store.RescueOutlook | None = None  # of the last pass (tests)

    def touch(self) -> None:
        """Something may run soon (a dispatch, a publish): end any rest."""
        with self._touch_lock:
            self._touches += 1
            self._rest_until = 0.0

    def run_once(self) -> Rescued:
        """Rescue one batch while master; how many rows changed."""
        wait = self.config.interval_s
        term = self.lease.term()
        if term is None:
            return Rescued(wait)
        if term != self._term:
            self._term, self._rest_until = term, 0.0
        if self.listening() and time.monotonic() < self._rest_until:
            return Rescued(wait)
        self.doing = "looking for stuck executions and expired tasks"
        touches = self._touches
        try:
            rows, expired = self._look()
            rescued = self._rescue(term, rows) if rows else 0
        except LeadershipLost as exc:
            self.lease.demote(term, str(exc))
            return Rescued(wait)
        self._rest(touches, rows or expired)
        return Rescued(wait, rescued, expired)

    def _look(self) -> tuple[list[Any], int]:
        """The stuck or orphaned executions, and how many tasks expired, in
        one transaction (with the outlook while idle is possible)."""
        note = outcome.expired_note(host=self.config.host)
        listening = self.listening()
        with self.database.transaction() as conn:
            rows = store.task_find_stuck(
                conn,
                grace_s=self.config.grace_s,
                out_of_date_s=self.lease.lease_ms / 1000,
                limit=defaults.CLAIM_BATCH,
            )
            ids = store.task_expire_due(conn, note=note, limit=defaults.CLAIM_BATCH)
            self.outlook = store.task_rescue_outlook(conn) if listening else None
        if ids:
            log.info(
                "%d task(s) expired before they started: %s", len(ids),
                ", ".join(str(i) for i in ids[:20]), extra={"action": "task_expired"},
            )  # fmt: skip
        return list(rows), len(ids)

    def _rest(self, touches: int, worked: object) -> None:
        """Rest while nothing runs or is in flight (see the module), unless
        `touch` was called during the pass."""
        look = self.outlook
        rest = 0.0
        if look is not None and not look.busy and not worked:
            rest = self.config.recheck_s or defaults.IDLE_RECHECK_S
            if look.expires_in is not None:
                rest = min(rest, look.expires_in)
        with self._touch_lock:
            if touches == self._touches:
                self._rest_until = time.monotonic() + rest if rest > 0 else 0.0

    def _rescue(self, term: int, rows: list[Any]) -> int:
        lease = self.lease.lease_ms
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
