"""The shared snapshot: one read of the overview per interval for all viewers.

Pages and live fragments render from the latest snapshot, so a hundred open
dashboards cost the database what one does. The wait between reads grows
with the read's own duration (at least `LOAD_FACTOR` times it), so a slow
database is never kept busy by the dashboard more than 1/LOAD_FACTOR of the
time. `version` and `counts_version` are hashes that serve as ETags.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasker import admin

log = logging.getLogger(__name__)

LOAD_FACTOR = 4


@dataclass(frozen=True)
class Snapshot:
    """One read of `admin_views.overview`: the data, when, how long it took, ETags."""

    data: dict[str, Any]
    read_ms: float
    taken_monotonic: float
    version: str
    counts_version: str


def _digest(value: Any) -> str:
    text = json.dumps(admin.to_jsonable(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Snapshots:
    """Reads the overview every `interval_s` (or longer, see module doc) in a thread.

    `run_once()` reads now (tests and start-up call it); `start()`/`stop()`
    run the loop; `current` is the newest snapshot. A failed read is logged
    and the previous snapshot stays current.
    """

    def __init__(self, read: Callable[[], dict[str, Any]], interval_s: float) -> None:
        self._read = read
        self.interval_s = interval_s
        self._current: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reads = 0

    def run_once(self) -> Snapshot:
        t0 = time.perf_counter()
        data = self._read()
        read_ms = (time.perf_counter() - t0) * 1000
        snap = Snapshot(
            data=data,
            read_ms=read_ms,
            taken_monotonic=time.monotonic(),
            version=_digest(data),
            counts_version=_digest(data["status"]["counts"]),
        )
        self._current = snap
        self.reads += 1
        return snap

    @property
    def current(self) -> Snapshot:
        return self._current if self._current is not None else self.run_once()

    def _wait_s(self) -> float:
        last = self._current.read_ms / 1000 if self._current else 0.0
        return max(self.interval_s, LOAD_FACTOR * last)

    def _loop(self) -> None:
        while not self._stop.wait(self._wait_s()):
            try:
                self.run_once()
            except Exception:
                log.exception("dashboard snapshot read failed; keeping the previous one")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tasker-web-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
