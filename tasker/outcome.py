"""What becomes of an execution: one pure decision for consumers and the rescuer alike."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasker import retry, states, text
from tasker.config import default_fqdn
from tasker.states import Status

TRACEBACK_HEAD_LINES = 12


@dataclass(frozen=True)
class Decision:
    """A guarded way out of `running` and what it writes."""

    transition: str  # succeed | retry | fail | hand_back
    take: int = 0  # runs charged
    err: str = ""  # errlog entry
    result: str | None = None  # JSON text, success only
    at: dt.datetime | None = None  # next run, absolute
    delay_s: float = 0.0  # next run, relative to the database clock

    def row(
        self, task_id: int, worker_id: int, log: str = "", *, linked: bool = False
    ) -> dict[str, Any]:
        """The finish row of `store.task_finish_if_running_many`."""
        return {
            "tid": task_id,
            "wid": worker_id,
            "log": log,
            "result": self.result,
            "take": self.take,
            "err": self.err,
            "at": self.at,
            "delay_ms": int(self.delay_s * 1000),
            "linked": linked,
        }


def errlog_entry(attempt: int, reason: str, detail: str = "", host: str | None = None) -> str:
    """One errlog entry: attempt, host (default `config.default_fqdn()`, which
    honours TASKER_FQDN), reason, then the head of the traceback."""
    host = host or default_fqdn()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    head = f"[attempt {attempt} on {host} at {stamp}] {text.storable(reason)}\n"
    lines = detail.strip().splitlines()
    if len(lines) > TRACEBACK_HEAD_LINES:
        lines = [*lines[:TRACEBACK_HEAD_LINES], f"... ({len(lines) - TRACEBACK_HEAD_LINES} more)"]
    return head + "".join(f"  {line}\n" for line in lines)


def succeeded(value: object, *, max_bytes: int | None = None) -> Decision:
    """`exec` returned: its value is the result. Raises TypeError/ValueError when
    the value is not JSON (NaN and infinities included, as RFC 8259 says) or
    its JSON is over `max_bytes`, which the caller records as a failure."""
    result = json.dumps(value, allow_nan=False, default=_no_default)
    # ensure_ascii (the default) escapes every non-ASCII character: bytes == characters.
    if max_bytes is not None and len(result) > max_bytes:
        raise ValueError(
            f"the result is {len(result)} bytes of JSON, over the limit of {max_bytes}"
        )
    return Decision("succeed", result=result)


def _no_default(value: object) -> Any:
    raise TypeError(f"result of type {type(value).__name__} is not JSON-serialisable")


def failed(
    *,
    retry_left: int,
    attempt: int,
    reason: str,
    detail: str = "",
    next_at: dt.datetime | None = None,
    next_delay_s: float | None = None,
    rand: Callable[[], float] | None = None,
    host: str | None = None,
) -> Decision:
    """A failure takes one run: `retry` with back-off while runs remain, else `failed`."""
    err = errlog_entry(attempt, reason, detail, host)
    if states.failure_target(retry_left) == Status.FAILED:
        return Decision("fail", take=1, err=err)
    if next_at is not None:
        return Decision("retry", take=1, err=err, at=next_at)
    if next_delay_s is not None:
        return Decision("retry", take=1, err=err, delay_s=next_delay_s)
    kw = {"rand": rand} if rand else {}
    return Decision("retry", take=1, err=err, delay_s=retry.backoff_s(attempt, **kw))


def bad_input(*, attempt: int, problem: str, host: str | None = None) -> Decision:
    """Input that does not decode fails at once and burns no runs."""
    return Decision("fail", take=0, err=errlog_entry(attempt, f"bad input: {problem}", host=host))


def released(*, next_at: dt.datetime | None, next_delay_s: float | None) -> Decision:
    """`ctx.release`: back to pending, no run charged."""
    return Decision("hand_back", at=next_at, delay_s=next_delay_s or 0.0)


def handed_back() -> Decision:
    """Graceful shutdown: back to pending at once, no run charged."""
    return Decision("hand_back")


CANCELLED_REASON = "cancelled: an admin asked the running task to stop"
ABANDONED = "exec did not stop within the grace after the request; its thread is abandoned"


def cancelled(
    *, attempt: int, was: Decision | None, how: str = "", host: str | None = None
) -> Decision:
    """The execution of a task an admin cancelled while it ran (DESIGN 7, abort).

    Whatever the execution did after the request, `was` (its own decision, or
    None when it was abandoned or killed, `how` saying which), the row ends
    `failed` with no retry and no run charged, as a cancelled pending task
    does; what it did is kept under the reason. River's completer and
    rescuer finish a job whose cancel was attempted as cancelled the same way.
    """
    if was is None:
        detail = how
    elif was.transition == "succeed":
        detail = "exec returned after the request; its result is not kept"
    elif was.transition == "hand_back":
        detail = "exec released the task after the request"
    else:  # its own entry, without a second "[attempt ...]" head
        head, _, rest = was.err.partition("\n")
        detail = f"exec ended with: {head.split('] ', 1)[-1]}\n{rest}"
    return Decision("fail", take=0, err=errlog_entry(attempt, CANCELLED_REASON, detail, host))


def after_cancel(was: Decision | None, *, attempt: int, host: str | None = None) -> Decision:
    """`cancelled` of what an execution did after the request (None: its thread
    was abandoned after the grace), unless that is a cancellation already (a
    killed child's)."""
    if was is None:
        return cancelled(attempt=attempt, was=None, how=ABANDONED, host=host)
    if was.transition == "fail" and was.err.split("\n", 1)[0].endswith(CANCELLED_REASON):
        return was
    return cancelled(attempt=attempt, was=was, host=host)
