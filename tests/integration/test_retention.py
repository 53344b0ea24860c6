"""The master's retention policy: old `success` rows go, everything else stays."""

from __future__ import annotations

import time

import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker


class Noop(MsgQ):
    topic = "ret.noop"
    spec = 0.1

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def test_retention_deletes_only_old_success_rows(db_url: str, local_broker: str) -> None:
    app = Tasker(db_url, broker=local_broker, keep_success_days=7)
    app.register(Noop)
    old_ok, old_failed, recent_ok = app.publish_many([Noop(), Noop(), Noop()])
    pending = app.publish(Noop(), exec_after=3600)
    with app.transaction() as conn:
        month = (
            "now() - interval '30 days'"
            if app.engine.dialect.name == "postgresql"
            else ("strftime('%Y-%m-%d %H:%M:%f000', 'now', '-30 days')")
        )
        for tid, status in ((old_ok, "success"), (old_failed, "failed")):
            conn.execute(
                sa.text(f"UPDATE task SET status = :s, finished = {month} WHERE id = :i"),
                {"s": status, "i": tid},
            )
    runner = app.start()
    try:
        assert app.result(recent_ok, timeout=30).success
        deadline = time.monotonic() + 30
        while True:
            with app.transaction() as conn:
                left = set(conn.execute(sa.text("SELECT id FROM task")).scalars())
            if old_ok not in left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert left == {old_failed, recent_ok, pending}
        assert runner.is_master
    finally:
        app.close()
