"""The MsgQ module `python -m bench.run` serves with `tasker run bench.tasks`.

One no-op topic with one int field: the cost measured is tasker's own
(claim, dispatch, start, finish, ack), not the task's.
"""

from __future__ import annotations

from tasker import MsgQ

TOPIC = "bench.noop"


class Noop(MsgQ):
    topic = TOPIC
    concurrency = 8
    spec = 0.05  # sweep every 50 ms besides the NOTIFY wake-ups
    n: int

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None
