"""The state machine driven by hand for integration tests: claim, start,
`execute`, finish, each through the real store in its own transaction."""

from __future__ import annotations

from typing import Any

from tasker import Tasker, outcome, store
from tasker.runtime.execute import Started, execute


class Runner:
    """The state machine driven by hand: claim, start, execute, finish."""

    def __init__(self, app: Tasker) -> None:
        self.app = app
        with app.transaction() as conn:
            self.iid = store.instance_register(
                conn, fqdn="h", pid=1, topics={}, master_eligible=True
            )
            won = store.core_attempt_elect(conn, instance_id=self.iid, fqdn="h")
        assert won is not None
        self.term = won.term

    def start(self, topic: str) -> list[Any]:
        with self.app.transaction() as conn:
            pairs = store.task_claim_due(conn, topic=topic, limit=100, term=self.term,
                                         instance_id=self.iid, window_s=60)  # fmt: skip
            return store.task_start_if_token(conn, pairs=pairs, instance_id=self.iid, fqdn="h")

    def finish(self, row: Any, decision: outcome.Decision) -> None:
        with self.app.transaction() as conn:
            store.task_finish_many(
                conn, [store.Finish(row.id, row.worker_id, decision, linked=row.linked)]
            )

    def run_all(self) -> int:
        """Run every due task of the registered topics until none is left."""
        ran = 0
        for _ in range(20):
            rows = [r for cls in self.app.registry for r in self.start(cls.topic)]
            if not rows:
                return ran
            for r in rows:
                started = Started.from_row(r)
                decision, _log = execute(self.app.registry.get(r.topic), started, host="h")
                self.finish(r, decision)
                ran += 1
        raise AssertionError("tasks kept coming")
