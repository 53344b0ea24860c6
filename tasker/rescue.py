"""Master-only: give stuck and orphaned executions back, forget dead instances.

A `running` row is stuck when it is past its timeout plus a grace, and
orphaned when its instance stopped beating (declared dead after
`master_out_of_date`). Either way it goes to `retry` (or `failed` when no
runs remain) through the same pure decision consumers use, guarded by the
execution's worker id, so a task that finished meanwhile is never touched.
An orphan is retried after the first, short back-off, not after its timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tasker import defaults, outcome, retry, store
from tasker.exceptions import DatabaseError, LeadershipLost

log = logging.getLogger(__name__)


def decide(row: Any, *, grace_s: float, out_of_date_ms: int) -> outcome.Decision:
    """What a stuck or orphaned execution becomes (pure)."""
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
    )


class Rescuer:
    """One pass per `run_once`; the runner schedules it while master."""

    def __init__(
        self,
        app: Any,
        *,
        instance_id: Callable[[], int],
        current_term: Callable[[], int | None],
        lease_ms: Callable[[], int],
        on_lost: Callable[[int, str], None],
        grace_s: float,
        forget_s: float = defaults.INSTANCE_FORGET_S,
        retention: Callable[[], int] | None = None,
    ) -> None:
        self.app = app
        self.instance_id = instance_id
        self.current_term = current_term
        self.lease_ms = lease_ms
        self.on_lost = on_lost
        self.grace_s = grace_s
        self.forget_s = forget_s
        self.retention = retention
        self._last_cleanup = 0.0

    def run_once(self) -> int:
        """Rescue what is stuck; returns how many rows changed."""
        term = self.current_term()
        if term is None:
            return 0
        try:
            changed = self._rescue(term)
            if time.monotonic() - self._last_cleanup > 60:
                self._cleanup()
            if self.retention is not None:
                self.retention()
            return changed
        except LeadershipLost as exc:
            self.on_lost(term, str(exc))
        except DatabaseError as exc:
            log.warning("rescue failed: %s", exc, extra={"action": "rescue_failed"})
        return 0

    def _rescue(self, term: int) -> int:
        lease = self.lease_ms()
        with self.app.transaction() as conn:
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
            d = decide(row, grace_s=self.grace_s, out_of_date_ms=lease)
            (fail_rows if d.transition == "fail" else retry_rows).append(
                d.row(row.id, row.worker_id)
            )
        with self.app.transaction() as conn:
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

    def _cleanup(self) -> None:
        self._last_cleanup = time.monotonic()
        with self.app.transaction() as conn:
            gone = store.instance_forget_dead(conn, older_than_ms=int(self.forget_s * 1000))
        if gone:
            log.info("forgot %d dead instance row(s)", gone, extra={"action": "forgot"})
