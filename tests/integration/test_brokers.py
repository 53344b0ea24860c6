"""The publisher: batches, asynchronous confirms, and what counts as failed."""

from __future__ import annotations

import time
import uuid

import kombu
import pytest

from tasker import brokers
from tasker.exceptions import BrokerError


def _settle_all(pub: brokers.Publisher, want: set[int]) -> tuple[set[int], set[int]]:
    done: set[int] = set()
    failed: set[int] = set()
    deadline = time.monotonic() + 10
    while (done | failed) < want and time.monotonic() < deadline:
        d, f = pub.settle(0.05)
        done.update(d)
        failed.update(f)
    return done, failed


@pytest.mark.rabbit
def test_amqp_batches_are_confirmed_and_delivered(amqp_url: str) -> None:
    topic = f"t.pub.{uuid.uuid4().hex[:8]}"
    broker = brokers.Broker(amqp_url, reconnect_retries=1, reconnect_interval_s=0.1)
    pub = brokers.Publisher(broker)
    try:
        one = pub.send(topic, [brokers.encode_body([(1, 11)]), brokers.encode_body([(2, 22)])])
        two = pub.send(topic, [brokers.encode_body([(3, 33), (4, 44)])])
        assert pub.unconfirmed <= 2
        done, failed = _settle_all(pub, {one, two})
        assert done == {one, two} and not failed
        assert pub.unconfirmed == 0
        with kombu.Connection(amqp_url) as conn:
            q = broker.queue(topic).bind(conn.channel())
            bodies = []
            while (msg := q.get(no_ack=True)) is not None:
                bodies.append(brokers.decode_body(msg.body))
            q.delete()
        assert bodies == [[(1, 11)], [(2, 22)], [(3, 33), (4, 44)]]
    finally:
        pub.close()


@pytest.mark.rabbit
def test_closing_with_unconfirmed_batches_fails_them(amqp_url: str) -> None:
    broker = brokers.Broker(amqp_url, reconnect_retries=1, reconnect_interval_s=0.1)
    pub = brokers.Publisher(broker)
    topic = f"t.pub.{uuid.uuid4().hex[:8]}"
    batch = pub.send(topic, [brokers.encode_body([(1, 1)])])
    pub.close()  # before any confirm was read
    done, failed = pub.settle()
    assert batch in failed and batch not in done
    with kombu.Connection(amqp_url) as conn:
        broker.queue(topic).bind(conn.channel()).delete()


def test_folder_broker_confirms_on_write(local_broker: str) -> None:
    broker = brokers.Broker(local_broker, reconnect_retries=1, reconnect_interval_s=0.1)
    pub = brokers.Publisher(broker)
    try:
        batch = pub.send("t.local", [brokers.encode_body([(5, 55)])])
        assert pub.settle() == ([batch], [])
    finally:
        pub.close()


def test_unreachable_broker_is_a_clear_error() -> None:
    broker = brokers.Broker(
        "amqp://guest:secret@127.0.0.1:1//", reconnect_retries=0, reconnect_interval_s=0.1
    )
    pub = brokers.Publisher(broker)
    with pytest.raises(BrokerError) as err:
        pub.send("t.nowhere", [brokers.encode_body([(1, 1)])])
    assert "secret" not in str(err.value) and "***" in str(err.value)
