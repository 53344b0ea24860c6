"""The shared snapshot: one read of the overview per interval for all viewers.

Pages and live fragments render from the latest snapshot, so a hundred open
dashboards cost the database what one does. The wait between reads grows
with the read's own duration (at least `LOAD_FACTOR` times it), so a slow
database is never kept busy by the dashboard more than 1/LOAD_FACTOR of the
time. Counts are exact up to a cap (`views.COUNT_CAP`); when one
reaches it, a whole-table count runs too, at most every `EXACT_EVERY_S`
seconds or `EXACT_FACTOR` times its own duration, whichever is longer (the
way River UI counts). `version` and `counts_version` are hashes that serve
as ETags.
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
EXACT_EVERY_S = 60.0
EXACT_FACTOR = 30

Counts = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Snapshot:
    """One read of `views.overview`: the data, when, how long the read
    took (ms; a whole-table count it waited for is not included), ETags."""

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

    `read(exact)` is the overview read given the last whole-table counts (or
    None); `count_all()` is that whole-table count. `run_once()` reads now
    (tests and start-up call it); `start()`/`stop()` run the loop (`current`
    starts it too); `current` is the newest snapshot. A failed read is logged and the previous
    snapshot stays current. Reads are serialised (an action may read at
    once from a request's thread, so its page shows the change).
    """

    def __init__(
        self,
        read: Callable[[Counts | None], dict[str, Any]],
        count_all: Callable[[], Counts],
        interval_s: float,
    ) -> None:
        self._read = read
        self._count_all = count_all
        self.interval_s = interval_s
        self._current: Snapshot | None = None
        self._exact: Counts | None = None
        self._exact_at = 0.0
        self._exact_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._reading = threading.Lock()  # the read state above has one writer at a time
        self.reads = 0
        self.exact_reads = 0

    def _exact_due(self) -> bool:
        if self._exact is None:
            return True
        every = max(EXACT_EVERY_S, EXACT_FACTOR * self._exact_s)
        return time.monotonic() - self._exact_at >= every

    def _count_exact(self) -> None:
        t0 = time.monotonic()
        self._exact = self._count_all()
        self._exact_at = time.monotonic()
        self._exact_s = self._exact_at - t0
        self.exact_reads += 1

    def run_once(self) -> Snapshot:
        with self._reading:
            return self._read_now()

    def _read_now(self) -> Snapshot:
        t0 = time.perf_counter()
        data = self._read(self._exact)
        if data["saturated"] and self._exact_due():
            self._count_exact()  # paced by its own schedule, not by LOAD_FACTOR
            t0 = time.perf_counter()
            data = self._read(self._exact)
        read_ms = (time.perf_counter() - t0) * 1000
        data["exact_age_s"] = time.monotonic() - self._exact_at if self._exact else None
        changes = (data["status"]["counts"], data["max_id"], data["throughput"][-3:])
        snap = Snapshot(
            data=data,
            read_ms=read_ms,
            taken_monotonic=time.monotonic(),
            version=_digest({k: v for k, v in data.items() if k != "exact_age_s"}),
            counts_version=_digest(changes),
        )
        self._current = snap
        self.reads += 1
        return snap

    @property
    def current(self) -> Snapshot:
        """The newest snapshot. The first call starts the loop when nothing
        did: a dashboard mounted in a host app never gets its own startup
        event, so the first request it serves is what starts the refresh."""
        if self._thread is None:
            self.start()
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
        """Start the loop (once, however many requests ask at the same time)."""
        with self._starting:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tasker-web-live", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._starting:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(10)
                self._thread = None
