"""The intake: the instance's one broker connection, deliveries in and acks out.

One kombu connection serves every topic, a channel per topic with its
prefetch (basic.qos). Each pass sends the acks that are due (a message is
acked only after every task it carries is written, and at once then: see
`acks`), then waits briefly for deliveries. When the connection is lost,
the unstarted tasks it brought are forgotten (the broker requeues their
messages) and it reconnects with the broker's bounded retries; after the
last try the instance stops loudly. A stop (SIGTERM) ends the retries at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import kombu

from tasker import brokers, defaults
from tasker.exceptions import BrokerError
from tasker.runtime.consumer.state import ConsumerState
from tasker.runtime.service import Fatal, Pass, Service, Supervision

log = logging.getLogger(__name__)

BUSY_POLL_S = 0.002
"""Wait for deliveries while work is in flight: acks (and the prefetch
window they free) must not be held back."""

IDLE_POLL_S = 0.05
"""Wait for deliveries while idle."""

MAX_FAILURES = 5
"""Reconnection has its own bounded retries (`brokers.Broker.connect`);
anything else that fails here this many times in a row is a bug to stop on."""


class Intake(Service):
    """Receives messages of every topic into the shared state and acks them."""

    name = "intake"

    def __init__(self, broker: brokers.Broker, state: ConsumerState, on_fatal: Fatal) -> None:
        super().__init__(Supervision(on_fatal, max_failures=MAX_FAILURES, retry_s=0.5))
        self.broker = broker
        self.state = state
        self.closing = False  # set by the consumer: finish acks, then close
        self._conn: kombu.Connection | None = None
        self._channels: dict[str, Any] = {}
        self._consumers: list[kombu.Consumer] = []
        # Set by the instance to its stop signal: a graceful stop gives up
        # connecting at once (unacked messages are requeued; tokens drop repeats).
        self.interrupted: Callable[[], bool] = lambda: False

    # --- connection -----------------------------------------------------------

    def connect(self) -> None:
        """Connect, declare each topic's queue and consume it (BrokerError after
        the broker's bounded retries)."""
        self.doing = "connecting to the broker"
        self.state.new_connection()
        conn = self.broker.connect(stop=self._stop_connecting)
        channels: dict[str, Any] = {}
        consumers = []
        try:
            with brokers.wrap_broker_errors(self.broker):
                for topic, lane in self.state.lanes.items():
                    channel = conn.channel()
                    # The master bounds what is in flight; this only caps messages.
                    most = lane.fixed_prefetch
                    most = defaults.AUTO_PREFETCH_MAX if most is None else most
                    channel.basic_qos(0, lane.concurrency + most, False)
                    q = self.broker.queue(topic).bind(channel)
                    q.declare()
                    c = kombu.Consumer(channel, queues=[q], on_message=self._receiver(topic),
                                       no_ack=False)  # fmt: skip
                    c.consume()
                    channels[topic] = channel
                    consumers.append(c)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.release()
            raise
        self._conn, self._channels, self._consumers = conn, channels, consumers

    def _stop_connecting(self) -> bool:
        return self.stopping or self.interrupted()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up (False while reconnecting)."""
        conn = self._conn
        return conn is not None and bool(conn.connected)

    def _receiver(self, topic: str) -> Callable[[Any], None]:
        def on_message(message: Any) -> None:
            try:
                pairs = brokers.decode_body(message.body)
            except ValueError as exc:
                log.error("dropped a message on %s: %s", topic, exc,
                          extra={"action": "bad_message"})  # fmt: skip
                pairs = []
            self.state.received(topic, message, pairs)

        return on_message

    # --- the loop ------------------------------------------------------------------

    def run_once(self) -> Pass:
        """Send due acks, then take deliveries for a moment; waits 0."""
        if self.closing:
            self.send_acks()
            return Pass(0.05)
        try:
            if self._conn is None:
                if self._stop_connecting():
                    return Pass(0.05)  # stopping: no new connection
                self.connect()
            conn = self._conn
            assert conn is not None
            self.doing = "acking"
            self.send_acks()
            if not self.state.accepting and self._consumers:
                self._cancel_consumers()
            self.doing = "receiving"
            timeout = BUSY_POLL_S if self.state.busy() else IDLE_POLL_S
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=timeout)
        except Exception as exc:
            if not brokers.is_broker_error(exc):
                raise
            self._reconnect(exc)
        return Pass(0.0)

    def send_acks(self) -> None:
        """Ack every message whose tasks are all written."""
        for topic, message, tag, multiple in self.state.take_acks():
            if not self.broker.is_amqp:
                if message is not None:
                    message.ack()
                continue
            channel = self._channels.get(topic)
            if channel is not None:
                channel.basic_ack(tag, multiple=multiple)

    def _reconnect(self, exc: BaseException) -> None:
        log.warning("broker connection lost (%s); reconnecting", exc,
                    extra={"action": "broker_lost"})  # fmt: skip
        self._close_connection()
        self.state.connection_lost()
        try:
            self.connect()
        except BrokerError as err:
            if self._stop_connecting():
                log.info("stopping: not reconnecting to the broker",
                         extra={"action": "broker_reconnect_stopped"})  # fmt: skip
                return
            self._give_up(
                f"gave up on the broker after {self.broker.reconnect_retries} tries: {err}"
            )
            return
        log.info("broker connection restored", extra={"action": "broker_restored"})

    def _cancel_consumers(self) -> None:
        consumers, self._consumers = self._consumers, []
        for c in consumers:
            with contextlib.suppress(Exception):
                c.cancel()

    def on_stop(self) -> None:
        """Ack what is written, then close (unacked messages are requeued)."""
        with contextlib.suppress(Exception):
            self.send_acks()
        self._close_connection()

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._consumers, self._channels = [], {}
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.release()
