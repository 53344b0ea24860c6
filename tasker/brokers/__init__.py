"""kombu for tasker, split by concern: `connection` (settings, queues, error
translation), `publisher` (batches with confirms), `body` (the JSON message),
`local` (the server-less embedded transport).
"""

from __future__ import annotations

from tasker.brokers.body import decode_body, encode_body
from tasker.brokers.connection import Broker, is_broker_error, redact, wrap_broker_errors
from tasker.brokers.local import LOCAL_POLL_S, LocalTransport
from tasker.brokers.publisher import Publisher
from tasker.topics import queue_name

__all__ = [
    "LOCAL_POLL_S",
    "Broker",
    "LocalTransport",
    "Publisher",
    "decode_body",
    "encode_body",
    "is_broker_error",
    "queue_name",
    "redact",
    "wrap_broker_errors",
]
