"""Broker connection settings, queues, and the one place broker errors are translated.

Each topic has one durable queue, `tasker.<topic>`, reached through the
default exchange.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu

from tasker.brokers.local import LOCAL_POLL_S, LocalTransport
from tasker.exceptions import BrokerError, BrokerRefused, ConfigurationError
from tasker.topics import queue_name

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
"""One connection attempt's limit: a broker that accepts and never answers
costs this, then the next try (a stop signal is looked at in between)."""

STOP_POLL_S = 0.1
"""How often a back-off between connection attempts looks at the stop flag."""


class Broker:
    """Connection settings for one app: URL, transport and reconnection policy."""

    def __init__(self, url: str, *, reconnect_retries: int, reconnect_interval_s: float) -> None:
        self.url = url
        self.reconnect_retries = reconnect_retries
        self.reconnect_interval_s = reconnect_interval_s
        self.is_local = url.startswith("filesystem://")
        self.is_amqp = url.split("://", 1)[0] in ("amqp", "pyamqp", "amqps")
        # Set once a connection with these settings succeeded: a refusal after
        # that (a vhost being re-created, permissions reset) is retried as an
        # outage is; before it, the settings themselves are wrong.
        self.accepted = False
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
        return kombu.Connection(self.url, heartbeat=0, connect_timeout=CONNECT_TIMEOUT_S)

    def connect(self, stop: Callable[[], bool] | None = None) -> kombu.Connection:
        """Connect with bounded retries and back-off; `BrokerError` after the
        last try, or at once when `stop()` turns true (checked between tries
        and every STOP_POLL_S of a back-off: a stop signal is obeyed while
        the broker refuses or does not answer). `BrokerRefused` at once,
        without retrying, when the broker refuses the login or the virtual
        host (`refusal`) and these settings never connected: a wrong password
        or vhost is a configuration error, not an outage (`tasker run` then
        exits 2 within a second, naming the URL with its password hidden).
        Anything else (refused or reset connections, timeouts) is retried."""
        stop = stop or _never
        for attempt in range(self.reconnect_retries + 1):
            if stop():
                raise BrokerError(f"broker {self.redacted()}: stop requested while connecting")
            conn = self.connection()
            try:
                with wrap_broker_errors(self):
                    conn.connect()
                self.accepted = True
                return conn
            except BrokerError as exc:
                conn.release()
                why = refusal(exc)
                if why is not None and not self.accepted:
                    raise BrokerRefused(f"broker {self.redacted()} {why}; not retrying") from exc
                if attempt == self.reconnect_retries:
                    raise
                wait = min(max(5.0, self.reconnect_interval_s),
                           self.reconnect_interval_s * (1 + attempt / 2))  # fmt: skip
                self._errback(exc.__cause__ or exc, wait)
                _sleep_unless(stop, wait)
            except BaseException:
                conn.release()
                raise
        raise AssertionError("unreachable")  # the last try returned or raised

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


_REFUSALS = {
    403: "refused the login ({}): check the user and password in the broker URL",
    530: "refused the virtual host ({}): check that it exists and that the user may use it",
}
"""AMQP reply codes of a connection refused for good: ACCESS_REFUSED (a wrong
user or password, or no permission on the vhost) and NOT_ALLOWED (no such
vhost)."""


def refusal(exc: BaseException) -> str | None:
    """What the broker refused for good in `exc` (or its causes), as the end of
    a sentence naming the broker; None when it is worth retrying (refused or
    reset connections, timeouts, a broker restarting)."""
    import amqp.exceptions

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, amqp.exceptions.AMQPError) and cause.code in _REFUSALS:
            text = str(getattr(cause, "reply_text", "") or cause).strip()
            return _REFUSALS[cause.code].format(f"{cause.code} {text}"[:300])
        kind = type(cause)
        if kind.__module__.startswith("redis") and kind.__name__ == "AuthenticationError":
            return f"refused the login ({cause}): check the user and password in the broker URL"
        cause = cause.__cause__ or cause.__context__
    return None


def _never() -> bool:
    return False


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(STOP_POLL_S, left))


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
