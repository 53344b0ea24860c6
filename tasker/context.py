"""The `Context` handed to `MsgQ.exec`: log lines, the next run time, release, abort."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from tasker import text, when
from tasker.exceptions import TaskCancelled


@dataclass
class Context:
    """What an execution may say about itself besides its return value.

    Everything here is bounded and checked as it is said: a log message is
    cut at `text.ENTRY_MAX_BYTES`, the attempt's whole log at
    `text.LOG_MAX_BYTES` (later lines are counted, not kept), and a time
    that cannot be planned raises `InvalidTime` inside `exec`, where the
    task's code can see it.

    Abort (DESIGN 7): when an admin cancels the task while it runs,
    `cancelled` turns true and `check()` raises `TaskCancelled`; a task that
    polls either stops early (procrastinate's `should_abort()`, River's
    cancelled context). Whatever it then does, the run ends `failed`.
    """

    task_id: int
    topic: str
    attempt: int
    worker_id: int
    lines: list[str] = field(default_factory=list)
    next_at: dt.datetime | None = None
    next_delay_s: float | None = None
    released: bool = False
    _size: int = field(default=0, init=False, repr=False)
    _dropped: int = field(default=0, init=False, repr=False)
    _cancelled: bool = field(default=False, init=False, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once an admin asked this running task to stop (`tasker cancel`)."""
        return self._cancelled

    def check(self) -> None:
        """Raise `TaskCancelled` when an admin asked this task to stop; call it
        between steps of long work (cheap: it reads one attribute)."""
        if self._cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled by an admin while it ran")

    def mark_cancelled(self) -> None:
        """Called by tasker's consumer, from another thread, when the cancel
        request reaches this execution (a plain attribute: atomic under the GIL)."""
        self._cancelled = True

    def log(self, message: object) -> None:
        """Append a line to the task's `log` column (written with the outcome)."""
        if self._dropped:
            self._dropped += 1
            return
        body = message if isinstance(message, str) else _safe_str(message)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = f"{stamp} {text.storable(body)}"
        size = (len(line) if line.isascii() else len(line.encode("utf-8"))) + 1
        if self._size + size > text.LOG_MAX_BYTES:  # the first line that does not fit
            self._dropped = 1
            return
        self._size += size
        self.lines.append(line)

    def exec_after(self, when_: dt.datetime | dt.timedelta | float) -> None:
        """When the next run may start if this one fails (absolute, or a delay
        in seconds). Raises `InvalidTime` for a value no database can plan."""
        at, delay_ms = when.plan(when_, what="ctx.exec_after")
        self.next_at = at
        self.next_delay_s = None if at is not None else delay_ms / 1000

    def release(self, delay: dt.datetime | dt.timedelta | float = 0.0) -> None:
        """Put the task back to `pending` after `exec` returns, charging no run.
        Raises `InvalidTime` as `exec_after` does."""
        at, delay_ms = when.plan(delay, what="ctx.release")
        self.released = True
        self.next_at = at
        self.next_delay_s = None if at is not None else delay_ms / 1000

    def log_text(self) -> str:
        """The attempt's log: one line per message, then what was not kept."""
        out = "".join(line + "\n" for line in self.lines)
        if self._dropped:
            over = text.LOG_MAX_BYTES
            out += f"... [{self._dropped} more log line(s) not kept: over {over} bytes]\n"
        return out


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except BaseException:  # the task's object may raise anything
        return f"<unprintable {type(value).__name__}>"
