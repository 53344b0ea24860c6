"""Which broker acks to send when a message's tasks are all written (pure).

Acks go out as soon as a message is written, whatever the order: a message
whose task runs for minutes must not hold back the acks (and with them the
prefetch window) of the short tasks delivered after it. Messages written in
delivery order are acked together with one `multiple=True` ack (AMQP 0-9-1
basic.ack), which covers only tags still unacked, so the single acks sent
for out-of-order messages are never acked twice.
"""

from __future__ import annotations

import collections
from typing import Any


class AckTracker:
    """Delivery tags of one channel, from delivery to ack."""

    def __init__(self) -> None:
        self.order: collections.deque[Any] = collections.deque()
        self.acked: set[Any] = set()  # written, not at the front of the order yet

    def delivered(self, tag: Any) -> None:
        self.order.append(tag)

    def written(self, tags: list[Any]) -> list[tuple[Any, bool]]:
        """Mark tags written; returns the acks to send, `(tag, multiple)`.

        The written prefix of the delivery order goes in one `multiple=True`
        ack; every other written tag is acked alone, at once.
        """
        self.acked.update(tags)
        acks: list[tuple[Any, bool]] = []
        upto = None
        while self.order and self.order[0] in self.acked:
            upto = self.order.popleft()
            self.acked.discard(upto)
        if upto is not None:
            acks.append((upto, True))
        fresh = [t for t in tags if t in self.acked]
        acks.extend((t, False) for t in fresh)
        return acks

    def pending(self) -> int:
        """Tags delivered and not yet written."""
        return len(self.order) - len(self.acked)
