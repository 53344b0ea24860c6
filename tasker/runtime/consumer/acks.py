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
        ack naming its newest tag not acked yet (RabbitMQ refuses a tag it
        no longer holds: PRECONDITION_FAILED, unknown delivery tag); every
        other newly written tag is acked alone, at once.
        """
        new = set(tags)
        self.acked.update(new)
        acks: list[tuple[Any, bool]] = []
        upto = None
        while self.order and self.order[0] in self.acked:
            tag = self.order.popleft()
            self.acked.discard(tag)
            if tag in new:  # the others of the prefix were acked alone before
                upto = tag
                new.discard(tag)
        if upto is not None:
            acks.append((upto, True))
        acks.extend((t, False) for t in tags if t in new)
        return acks

    def pending(self) -> int:
        """Tags delivered and not yet written."""
        return len(self.order) - len(self.acked)
