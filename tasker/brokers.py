"""kombu connections, queues and publishing; the one place broker errors are translated.

Each topic has one durable queue, `tasker.<topic>`, reached through the
default exchange. A message body is JSON: {"tasks": [[id, token], ...]}.
On AMQP a batch of messages is confirmed once (publisher confirms waited for
per batch, never per message).

The embedded default, `filesystem://<folder>`, is kombu's filesystem
transport with writes and takes made atomic by rename, so any number of
processes on one machine can share a folder without a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import kombu
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from tasker.exceptions import BrokerError, ConfigurationError
from tasker.topics import queue_name

log = logging.getLogger(__name__)

LOCAL_POLL_S = 0.005


def encode_body(pairs: Sequence[tuple[int, int]]) -> bytes:
    return json.dumps({"tasks": [list(p) for p in pairs]}, separators=(",", ":")).encode()


def decode_body(body: bytes | str) -> list[tuple[int, int]]:
    """The (id, token) pairs of a message, or ValueError saying what is wrong."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"message is not valid JSON: {exc}") from None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list):
        raise ValueError('message has no "tasks" list')
    pairs = []
    for item in tasks:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            raise ValueError(f"message task {item!r} is not an [id, token] pair of ints")
        pairs.append((item[0], item[1]))
    return pairs


# --- the embedded transport -------------------------------------------------


class _LocalChannel(filesystem.Channel):
    """Filesystem channel whose put and get are atomic renames within one folder."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        folder = self.data_folder_out
        name = f"{time.time_ns():020d}_{uuid.uuid4().hex}.{queue}.msg"
        tmp = os.path.join(folder, ".tmp-" + name)
        try:
            with open(tmp, "wb") as f:
                f.write(kombu_dumps(payload).encode())
            os.rename(tmp, os.path.join(folder, name))
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot write to {folder!r}: {exc}") from exc

    def _get(self, queue: str) -> Any:
        folder = self.data_folder_in
        wanted = f"{queue}.msg"
        taken = os.path.join(folder, "taken")
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            mine = os.path.join(taken, f"{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(folder, name), mine)
            except OSError:
                continue  # another process took it first
            try:
                with open(mine, "rb") as f:
                    payload = f.read()
            finally:
                with contextlib.suppress(OSError):
                    os.remove(mine)
            return kombu_loads(payload)
        raise Empty()

    def _size(self, queue: str) -> int:
        wanted = f"{queue}.msg"
        return sum(1 for n in os.listdir(self.data_folder_in) if n.partition(".")[2] == wanted)

    def _purge(self, queue: str) -> int:
        count = 0
        wanted = f"{queue}.msg"
        for name in os.listdir(self.data_folder_in):
            if name.partition(".")[2] == wanted:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.data_folder_in, name))
                    count += 1
        return count


class LocalTransport(filesystem.Transport):
    Channel = _LocalChannel
    polling_interval = LOCAL_POLL_S


# --- connections ------------------------------------------------------------


class Broker:
    """Connection settings for one app: URL, transport and reconnection policy."""

    def __init__(self, url: str, *, reconnect_retries: int, reconnect_interval_s: float) -> None:
        self.url = url
        self.reconnect_retries = reconnect_retries
        self.reconnect_interval_s = reconnect_interval_s
        self.is_local = url.startswith("filesystem://")
        self.is_amqp = url.split("://", 1)[0] in ("amqp", "pyamqp", "amqps")
        if "://" not in url:
            raise ConfigurationError(f"not a broker URL: {self.redacted()!r}")
        if self.is_local:
            self.folder = Path(url[len("filesystem://") :] or ".tasker-broker").resolve()

    def redacted(self) -> str:
        return redact(self.url)

    def connection(self) -> kombu.Connection:
        """A new, not yet connected, kombu connection."""
        if self.is_local:
            (self.folder / "taken").mkdir(parents=True, exist_ok=True)
            (self.folder / "control").mkdir(parents=True, exist_ok=True)
            folder = str(self.folder)
            return kombu.Connection(
                transport=LocalTransport,
                transport_options={
                    "data_folder_in": folder,
                    "data_folder_out": folder,
                    "control_folder": str(self.folder / "control"),
                    "polling_interval": LOCAL_POLL_S,
                },
            )
        return kombu.Connection(self.url, heartbeat=0, connect_timeout=5)

    def connect(self, stop_check: Any = None) -> kombu.Connection:
        """Connect with bounded retries and back-off; `BrokerError` after the last try."""
        conn = self.connection()
        try:
            with wrap_broker_errors(self):
                conn.ensure_connection(
                    max_retries=self.reconnect_retries,
                    interval_start=self.reconnect_interval_s,
                    interval_step=self.reconnect_interval_s / 2,
                    interval_max=max(5.0, self.reconnect_interval_s),
                    errback=self._errback,
                )
        except BaseException:
            conn.release()
            raise
        return conn

    def _errback(self, exc: BaseException, interval: float) -> None:
        log.warning(
            "broker %s unreachable (%s); retrying in %.1fs",
            self.redacted(),
            exc,
            interval,
            extra={"action": "broker_retry"},
        )

    def queue(self, topic: str, *, exact: bool = False) -> kombu.Queue:
        """The durable queue of a topic (`tasker.<topic>`), or with `exact` the
        queue of exactly that name (a result topic)."""
        name = topic if exact else queue_name(topic)
        return kombu.Queue(
            name,
            exchange=kombu.Exchange(""),
            routing_key=name,
            durable=True,
            auto_delete=False,
        )


def redact(url: str) -> str:
    """A broker URL with its password hidden."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


@contextlib.contextmanager
def wrap_broker_errors(broker: Broker) -> Iterator[None]:
    """Translate kombu/amqp/socket errors into `BrokerError`, keeping the cause."""
    try:
        yield
    except BrokerError:
        raise
    except Exception as exc:
        if not is_broker_error(exc):
            raise
        raise BrokerError(f"broker {broker.redacted()}: {type(exc).__name__}: {exc}") from exc


def is_broker_error(exc: BaseException) -> bool:
    """Whether an exception came from the broker or the network under it."""
    import amqp.exceptions

    return isinstance(
        exc,
        (
            OSError,
            kombu.exceptions.KombuError,
            amqp.exceptions.AMQPError,
            amqp.exceptions.RecoverableConnectionError,
            ConnectionError,
            EOFError,
        ),
    ) or type(exc).__module__.startswith(("redis", "kombu", "amqp"))


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
