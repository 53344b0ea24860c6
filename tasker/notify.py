"""PostgreSQL LISTEN: wake the dispatcher on publish and the elector on resign.

Only a latency aid: sweeps and beats run on their schedule regardless, so a
lost notification or a dead listener connection delays work, never loses it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
import sqlalchemy as sa

from tasker import store

log = logging.getLogger(__name__)


def conninfo(url: sa.URL) -> str:
    """A libpq URL for psycopg from the app's SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """One thread, one autocommit connection, LISTEN on tasker's channels."""

    def __init__(
        self,
        url: sa.URL,
        *,
        on_publish: Callable[[str], None],
        on_core: Callable[[], None],
        retry_s: float = 2.0,
    ) -> None:
        self.url = url
        self.on_publish = on_publish
        self.on_core = on_core
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tasker-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                log.debug("listener connection failed: %s", exc, extra={"action": "listen_failed"})
                self._stop.wait(self.retry_s)

    def _listen(self) -> None:
        with psycopg.connect(conninfo(self.url), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
            conn.execute(f"LISTEN {store.CORE_CHANNEL}")
            while not self._stop.is_set():
                for n in conn.notifies(timeout=0.5):
                    if n.channel == store.PUBLISH_CHANNEL:
                        self.on_publish(n.payload)
                    elif n.channel == store.CORE_CHANNEL:
                        self.on_core()
