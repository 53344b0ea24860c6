"""PostgreSQL LISTEN: wake the dispatcher on publish, the elector on resign
and on a cancel request for a task of this instance.

Only a latency aid: sweeps and beats run on their schedule regardless, so a
lost notification or a dead listener connection delays work, never loses
it; a failed connection is retried quietly for as long as the instance runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

from tasker import defaults, store
from tasker.db import conninfo
from tasker.runtime.service import Fatal, Service

log = logging.getLogger(__name__)

POLL_S = 0.5
"""How long one pass waits for notifications."""


class Listener(Service):
    """One autocommit connection, LISTEN on tasker's channels."""

    name = "listener"

    def __init__(
        self,
        url: sa.URL,
        *,
        on_publish: Callable[[str], None],
        on_core: Callable[[], None],
        on_fatal: Fatal,
        on_cancel: Callable[[str], None] = lambda payload: None,
        retry_s: float = 2.0,
        max_failures: int = defaults.RECONNECT_RETRIES,
    ) -> None:
        super().__init__(on_fatal=on_fatal, max_failures=max_failures, retry_s=retry_s)
        self.url = url
        self.on_publish = on_publish
        self.on_core = on_core
        self.on_cancel = on_cancel
        self._conn: Any = None

    def run_once(self) -> float:
        """Deliver the notifications of up to `POLL_S`; 0 (go on) or the retry wait."""
        try:
            if self._conn is None:
                self.doing = "connecting"
                self._conn = psycopg.connect(conninfo(self.url), autocommit=True, connect_timeout=5)
                self._conn.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
                self._conn.execute(f"LISTEN {store.CORE_CHANNEL}")
                self._conn.execute(f"LISTEN {store.CANCEL_CHANNEL}")
            self.doing = "listening"
            for n in self._conn.notifies(timeout=POLL_S):
                if n.channel == store.PUBLISH_CHANNEL:
                    self.on_publish(n.payload)
                elif n.channel == store.CORE_CHANNEL:
                    self.on_core()
                elif n.channel == store.CANCEL_CHANNEL:
                    self.on_cancel(n.payload)
        except psycopg.Error as exc:
            log.debug("listener connection failed: %s", exc, extra={"action": "listen_failed"})
            self._close()
            return self.retry_s
        return 0.0

    def on_stop(self) -> None:
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
