"""The `Context` handed to `MsgQ.exec`: log lines, the next run time, release."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


def _as_delay(value: dt.datetime | dt.timedelta | float) -> tuple[dt.datetime | None, float]:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value, 0.0
    if isinstance(value, dt.timedelta):
        return None, value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None, float(value)
    raise TypeError(f"expected a datetime, timedelta or seconds, got {type(value).__name__}")


@dataclass
class Context:
    """What an execution may say about itself besides its return value."""

    task_id: int
    topic: str
    attempt: int
    worker_id: int
    lines: list[str] = field(default_factory=list)
    next_at: dt.datetime | None = None
    next_delay_s: float | None = None
    released: bool = False

    def log(self, message: str) -> None:
        """Append a line to the task's `log` column (written with the outcome)."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.lines.append(f"{stamp} {message}")

    def exec_after(self, when: dt.datetime | dt.timedelta | float) -> None:
        """When the next run may start if this one fails (absolute, or a delay in seconds)."""
        self.next_at, delay = _as_delay(when)
        self.next_delay_s = None if self.next_at else delay

    def release(self, delay: dt.datetime | dt.timedelta | float = 0.0) -> None:
        """Put the task back to `pending` after `exec` returns, charging no run."""
        self.released = True
        self.exec_after(delay)

    def log_text(self) -> str:
        return "".join(line + "\n" for line in self.lines)
