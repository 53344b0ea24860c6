"""Publishing batches of task messages, with publisher confirms on AMQP.

On AMQP a batch of messages is confirmed once (publisher confirms waited for
per batch, never per message).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import kombu

from tasker.brokers.connection import Broker, wrap_broker_errors
from tasker.exceptions import BrokerError
from tasker.topics import queue_name

log = logging.getLogger(__name__)


class Publisher:
    """Publishes batches of task messages on one connection (master side).

    On AMQP, publisher confirms are collected asynchronously: `send` returns
    once the messages are written, and `settle` reports which batches the
    broker confirmed and which it refused or never confirmed in time, so the
    dispatcher undoes only those claims and never waits a round trip per
    sweep. Other transports confirm a batch as soon as it is written.
    """

    def __init__(self, broker: Broker, *, confirm_timeout_s: float = 10.0) -> None:
        self.broker = broker
        self.confirm_timeout_s = confirm_timeout_s
        self._conn: kombu.Connection | None = None
        self._channel: Any = None
        self._producer: kombu.Producer | None = None
        self._declared: set[str] = set()
        self._seq = 0  # delivery tag of the last message sent on this channel
        self._waiting: dict[int, int] = {}  # unconfirmed tag -> batch
        self._batches: dict[int, list[Any]] = {}  # batch -> [unconfirmed count, deadline, failed]
        self._next_batch = 0
        self._done: list[int] = []
        self._failed: list[int] = []

    def _ensure(self) -> None:
        if self._conn is not None:
            return
        conn = self.broker.connect()
        channel = conn.channel()
        if self.broker.is_amqp:
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.confirm_select()
        self._conn, self._channel = conn, channel
        self._producer = kombu.Producer(channel, exchange=kombu.Exchange(""), auto_declare=False)
        self._declared.clear()
        self._seq = 0

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._confirm(tag, multiple, ok=True)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._confirm(tag, multiple, ok=False)

    def _confirm(self, tag: int, multiple: bool, *, ok: bool) -> None:
        tags = [t for t in self._waiting if t <= tag] if multiple else [tag]
        for t in tags:
            batch = self._waiting.pop(t, None)
            if batch is None:
                continue
            state = self._batches[batch]
            state[0] -= 1
            state[2] = state[2] or not ok
            if state[0] == 0:
                del self._batches[batch]
                (self._done if not state[2] else self._failed).append(batch)

    def send(self, topic: str, bodies: Sequence[bytes], *, exact: bool = False) -> int:
        """Write persistent messages to the topic's queue (with `exact`, the
        queue of exactly that name); returns a batch id for `settle`."""
        batch = self._next_batch
        self._next_batch += 1
        if not bodies:
            self._done.append(batch)
            return batch
        with wrap_broker_errors(self.broker):
            try:
                self._send(topic, bodies, batch, exact=exact)
            except BaseException:
                self.close()
                raise
        return batch

    def _send(self, topic: str, bodies: Sequence[bytes], batch: int, *, exact: bool) -> None:
        self._ensure()
        assert self._producer is not None
        name = topic if exact else queue_name(topic)
        if name not in self._declared:
            self.broker.queue(topic, exact=exact).bind(self._channel).declare()
            self._declared.add(name)
        if self.broker.is_amqp:
            deadline = time.monotonic() + self.confirm_timeout_s
            self._batches[batch] = [len(bodies), deadline, False]
        for body in bodies:
            self._producer.publish(
                body,
                routing_key=name,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
            )
            self._seq += 1
            if self.broker.is_amqp:
                self._waiting[self._seq] = batch
        if not self.broker.is_amqp:
            self._done.append(batch)

    @property
    def unconfirmed(self) -> int:
        """Batches sent and not yet settled."""
        return len(self._batches)

    def settle(self, wait_s: float = 0.0) -> tuple[list[int], list[int]]:
        """Collect confirms (waiting up to `wait_s` for the first); returns
        (confirmed batches, failed batches). A batch fails when the broker
        refused it, did not confirm it in time, or the connection broke."""
        if self._batches and self._conn is not None:
            try:
                with wrap_broker_errors(self.broker):
                    self._drain(wait_s)
            except BrokerError as exc:
                log.warning("publisher connection lost: %s", exc, extra={"action": "publish_lost"})
                self.close()
        now = time.monotonic()
        for batch, state in list(self._batches.items()):
            if state[1] <= now:
                self._drop(batch)
        done, failed = self._done, self._failed
        self._done, self._failed = [], []
        return done, failed

    def _drain(self, wait_s: float) -> None:
        assert self._conn is not None
        timeout = wait_s
        while self._batches:
            try:
                self._conn.drain_events(timeout=timeout)
            except TimeoutError:
                return
            timeout = 0  # then take what else has arrived, without waiting

    def _drop(self, batch: int) -> None:
        self._batches.pop(batch, None)
        for t in [t for t, b in self._waiting.items() if b == batch]:
            del self._waiting[t]
        self._failed.append(batch)

    def publish(self, topic: str, bodies: Sequence[bytes], *, exact: bool = False) -> None:
        """Send and wait for the broker's confirms; BrokerError when it refused
        them or did not confirm them within `confirm_timeout_s`."""
        batch = self.send(topic, bodies, exact=exact)
        while True:
            done, failed = self.settle(0.05)
            if batch in failed:
                raise BrokerError("the broker did not confirm the published messages")
            if batch in done:
                return

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._producer = self._channel = None
        for batch in list(self._batches):
            self._drop(batch)  # unconfirmed on a lost channel: treat as not sent
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.release()
