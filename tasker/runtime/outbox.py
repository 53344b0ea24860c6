"""The result publisher: outcomes of MsgQs with a `result_topic`, from the
`task_outbox` table to their queues (DESIGN 7, goagent's result topic).

The transaction that makes such a task terminal also writes its message
to the outbox (`store.task_links_on_terminal`), so an outcome is never
published before it is committed, and never lost when the instance dies or
the broker is down: the row stays until the broker confirms it. A pass
takes a batch of rows for `hold_s` (another instance's publisher skips
them), publishes each as a persistent JSON message to the durable queue of
exactly that name through the default exchange, waits for the publisher
confirms (AMQP), then deletes the rows. A broker failure lets the rows go
at once and is retried with back-off under the service's supervision.
Delivery is at least once: a publisher that dies between the confirm and
the delete sends those messages again when the hold ends; consumers
deduplicate by `id`.

Transactional outbox as in procrastinate's and River's "insert in the same
transaction" advice; the writer thread is never held back by the broker:
it only wakes this service after its commit.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tasker import brokers, db, store
from tasker.exceptions import BrokerError, DatabaseError
from tasker.runtime.service import Pass, Service, Supervision

log = logging.getLogger(__name__)

POLL_S = 1.0
"""Look at the outbox this often without a wake (rows written by a rescue,
an admin cancel or another instance)..."""

IDLE_POLL_S = 8.0
"""... and, while it stays empty, less and less often (the wait doubles up
to this), so an idle instance does not read it every second. The status
writer wakes the publisher after each commit of its own outcomes."""

BATCH = 500
"""Outbox rows taken per pass."""

HOLD_S = 30.0
"""How long a taken row is ours before another publisher may take it."""


@dataclass(frozen=True)
class PublisherConfig:
    """Settings of the result publisher (seconds, rows)."""

    poll_s: float = POLL_S  # look at the outbox this often without a wake
    idle_poll_s: float = IDLE_POLL_S  # the longest wait while it stays empty
    batch: int = BATCH  # outbox rows taken per pass
    hold_s: float = HOLD_S  # a taken row is ours this long


@dataclass(frozen=True)
class Published(Pass):
    """One publishing pass: messages the broker confirmed."""

    published: int = 0


class ResultPublisher(Service):
    """Drains `task_outbox` to the broker; one per instance that has a class
    with a `result_topic`."""

    name = "results"

    def __init__(
        self,
        database: db.Database,
        broker: brokers.Broker,
        supervision: Supervision,
        config: PublisherConfig = PublisherConfig(),
        *,
        queues: Sequence[str],
    ) -> None:
        super().__init__(supervision)
        self.database = database
        self.queues = sorted(set(queues))
        self.broker = broker
        self.publisher = brokers.Publisher(broker)
        self.config = config
        self.hold_ms = round(config.hold_s * 1000)
        self.flushed: Published | None = None  # the last pass `on_stop` ran, if it ran
        self._empty_wait = config.poll_s  # the wait after the next empty pass

    def declare(self) -> None:
        """Declare the result queues (at instance start); BrokerError when the
        broker cannot be reached after its bounded retries."""
        self.doing = "declaring the result queues"
        conn = self.broker.connect()
        try:
            with brokers.wrap_broker_errors(self.broker):
                channel = conn.channel()
                for name in self.queues:
                    self.broker.queue(name, exact=True).bind(channel).declare()
        finally:
            conn.release()

    def run_once(self) -> Published:
        """Publish one batch of outbox rows; how many the broker confirmed,
        and a wait of 0 when more may wait, else the poll interval."""
        cfg = self.config
        self.doing = "taking outcomes from the outbox"
        with self.database.transaction() as conn:
            rows = store.outbox_take(conn, limit=cfg.batch, hold_s=self.hold_ms / 1000)
        if not rows:
            wait, self._empty_wait = self._empty_wait, min(cfg.idle_poll_s, self._empty_wait * 2)
            return Published(wait)
        self._empty_wait = cfg.poll_s
        by_queue: dict[str, list[tuple[int, bytes]]] = collections.defaultdict(list)
        for r in rows:
            by_queue[r.queue].append((r.id, r.body.encode()))
        sent: list[int] = []
        try:
            for queue, items in by_queue.items():
                self.doing = f"publishing {len(items)} outcome(s) to {queue!r}"
                self.publisher.publish(queue, [body for _id, body in items], exact=True)
                sent.extend(i for i, _body in items)
        except BrokerError:
            self._release([r.id for r in rows if r.id not in set(sent)])
            raise
        finally:
            if sent:
                self.doing = f"forgetting {len(sent)} published outcome(s)"
                with self.database.transaction() as conn:
                    store.outbox_delete(conn, ids=sent)
        return Published(0.0 if len(rows) == cfg.batch else cfg.poll_s, len(sent))

    def _release(self, ids: list[int]) -> None:
        try:
            with self.database.transaction() as conn:
                store.outbox_release(conn, ids=ids)
        except DatabaseError as exc:  # they are retried when their hold ends
            log.warning("could not release %d outbox row(s): %s", len(ids), exc,
                        extra={"action": "outbox_release_failed"})  # fmt: skip

    def on_stop(self) -> None:
        """One last pass once the loop ended (the instance stops this service
        after its status writer), so what was just finished goes out now, on
        the connection already open. Best effort, skipped while the broker or
        database is failing: what is left waits in the outbox for any publisher."""
        try:
            if not self.failures:
                with contextlib.suppress(DatabaseError, BrokerError):
                    self.flushed = self.run_once()
        finally:
            self.publisher.close()
