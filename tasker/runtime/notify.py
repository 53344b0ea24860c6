"""PostgreSQL LISTEN: wake the dispatcher on publish, the elector on resign
and on a cancel request for a task of this instance.

Besides a latency aid, it is what lets an idle master skip sweeps
(`runtime.quiet`): `listening` says whether notifications can be missed
right now, and `on_listen` is called each time LISTEN is (re)established,
so that whatever was notified while the connection was down is looked at
again. A lost notification or a dead listener connection delays work, never
loses it; a failed connection is retried quietly for as long as the instance runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa

from tasker import store
from tasker.db import conninfo
from tasker.runtime.service import Pass, Service, Supervision

log = logging.getLogger(__name__)

POLL_S = 0.5
"""How long one pass waits for notifications."""


@dataclass(frozen=True)
class ListenerConfig:
    """Settings of the listener (seconds)."""

    poll_s: float = POLL_S  # how long one pass waits for notifications
    reconnect_s: float = 2.0  # wait before connecting again after a failure


class Listener(Service):
    """One autocommit connection, LISTEN on tasker's channels."""

    name = "listener"

    def __init__(
        self,
        url: sa.URL,
        supervision: Supervision,
        config: ListenerConfig = ListenerConfig(),
        *,
        on_publish: Callable[[str], None],
        on_core: Callable[[], None],
        on_cancel: Callable[[str], None] = lambda payload: None,
        on_listen: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(supervision)
        self.config = config
        self.url = url
        self.on_publish = on_publish
        self.on_core = on_core
        self.on_cancel = on_cancel
        self.on_listen = on_listen
        self._conn: Any = None
        self.listening = False  # LISTEN holds: no notification can be missed

    def run_once(self) -> Pass:
        """Deliver the notifications of up to `poll_s`; waits 0 (go on) or,
        after a failed connection, `reconnect_s`."""
        try:
            if self._conn is None:
                self.doing = "connecting"
                self._conn = psycopg.connect(conninfo(self.url), autocommit=True, connect_timeout=5)
                self._conn.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
                self._conn.execute(f"LISTEN {store.CORE_CHANNEL}")
                self._conn.execute(f"LISTEN {store.CANCEL_CHANNEL}")
                self.listening = True
                self.on_listen()
            self.doing = "listening"
            for n in self._conn.notifies(timeout=self.config.poll_s):
                if n.channel == store.PUBLISH_CHANNEL:
                    self.on_publish(n.payload)
                elif n.channel == store.CORE_CHANNEL:
                    self.on_core()
                elif n.channel == store.CANCEL_CHANNEL:
                    self.on_cancel(n.payload)
        except psycopg.Error as exc:
            log.debug("listener connection failed: %s", exc, extra={"action": "listen_failed"})
            self._close()
            return Pass(self.config.reconnect_s)
        return Pass(0.0)

    def on_stop(self) -> None:
        self._close()

    def _close(self) -> None:
        self.listening = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
