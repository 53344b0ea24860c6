"""What becomes of an execution: one pure decision for consumers, the
rescuer and `tasker.testing` alike.

Callers say how an execution ended (an `Ended`: returned, raised, timed
out, cancelled, bad input, not stored, handed back, rescued) and `decide`
turns it into a `Decision`: its transition, runs charged, errlog entry,
result and next run. What a cancel becomes, wherever it is observed, is
`cancelled`, the one cancel rule. A class's retry policy (`retry_on`,
`tasker.Fail`, `backoff`) is applied here too, to what `exec` raised.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasker import retry, states, text
from tasker.config import default_fqdn
from tasker.exceptions import Fail
from tasker.states import Status

TRACEBACK_HEAD_LINES = 12


class Transition(str, enum.Enum):
    """The ways out of `running`, named as in `states.TRANSITIONS`."""

    SUCCEED = "succeed"
    RETRY = "retry"
    FAIL = "fail"
    HAND_BACK = "hand_back"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Decision:
    """A guarded way out of `running` and what it writes."""

    transition: Transition  # a plain name ("retry") is accepted and converted
    take: int = 0  # runs charged
    err: str = ""  # errlog entry
    result: str | None = None  # JSON text, success only
    at: dt.datetime | None = None  # next run, absolute
    delay_s: float = 0.0  # next run, relative to the database clock (s)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transition", Transition(self.transition))

    @property
    def target(self) -> Status:
        """The status the row ends in."""
        return states.transition(self.transition.value).target


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
    return Decision(Transition.SUCCEED, result=result)


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
    backoff: retry.Backoff = None,
    final: bool = False,
) -> Decision:
    """A failure takes one run: `retry` with back-off while runs remain, else
    `failed`; `final` fails it now whatever runs are left. `backoff` is the
    class's (`retry.policy_backoff_s`); `ctx.exec_after` wins over it."""
    err = errlog_entry(attempt, reason, detail, host)
    if final or states.failure_target(retry_left) == Status.FAILED:
        return Decision(Transition.FAIL, take=1, err=err)
    if next_at is not None:
        return Decision(Transition.RETRY, take=1, err=err, at=next_at)
    if next_delay_s is not None:
        return Decision(Transition.RETRY, take=1, err=err, delay_s=next_delay_s)
    delay_s = retry.policy_backoff_s(backoff, attempt, rand=rand or retry.system_random)
    return Decision(Transition.RETRY, take=1, err=err, delay_s=delay_s)


def bad_input(*, attempt: int, problem: str, host: str | None = None) -> Decision:
    """Input that does not decode fails at once and burns no runs."""
    return Decision(
        Transition.FAIL, take=0, err=errlog_entry(attempt, f"bad input: {problem}", host=host)
    )


def released(*, next_at: dt.datetime | None, next_delay_s: float | None) -> Decision:
    """`ctx.release`: back to pending, no run charged."""
    return Decision(Transition.HAND_BACK, at=next_at, delay_s=next_delay_s or 0.0)


def handed_back() -> Decision:
    """Graceful shutdown: back to pending at once, no run charged."""
    return Decision(Transition.HAND_BACK)


EXPIRED_REASON = "expired: not started before its `expires` time; it never ran"


def expired_note(*, host: str | None = None) -> str:
    """The errlog entry of a task that expired before it started (DESIGN 1, `expires`)."""
    return errlog_entry(0, EXPIRED_REASON, host=host).replace("[attempt 0 on", "[expired on", 1)


CANCELLED_REASON = "cancelled: an admin asked the running task to stop"
ABANDONED = "exec did not stop within the grace after the request; its thread is abandoned"
STOPPED_BEFORE = "the instance stopped before exec did"
FINISHED_BY_MASTER = "finished by the master: its instance did not stop it in time or died"


def cancelled(
    was: Decision | None = None,
    *,
    attempt: int,
    how: str = ABANDONED,
    host: str | None = None,
) -> Decision:
    """The cancel rule (DESIGN 7, abort): what an execution an admin cancelled
    while it ran becomes, wherever the cancel is observed.

    Whatever the execution did after the request, `was` (its own decision,
    or None when it never ran to an end: abandoned, killed, handed back,
    rescued, `how` saying which), the row ends `failed` with no retry and no
    run charged, as a cancelled pending task does; what it did is kept under
    the reason. A `was` that is a cancellation already is returned as it is
    (never wrapped twice). River's completer and rescuer finish a job whose
    cancel was attempted as cancelled the same way.
    """
    if was is not None and _is_cancellation(was):
        return was
    if was is None:
        detail = how
    elif was.transition == Transition.SUCCEED:
        detail = "exec returned after the request; its result is not kept"
    elif was.transition == Transition.HAND_BACK:
        detail = "exec released the task after the request"
    else:  # its own entry, without a second "[attempt ...]" head
        head, _, rest = was.err.partition("\n")
        detail = f"exec ended with: {head.split('] ', 1)[-1]}\n{rest}"
    return Decision(
        Transition.FAIL, take=0, err=errlog_entry(attempt, CANCELLED_REASON, detail, host)
    )


def _is_cancellation(d: Decision) -> bool:
    return d.transition == Transition.FAIL and d.err.split("\n", 1)[0].endswith(CANCELLED_REASON)


# --- how an execution ended -> its decision ---------------------------------------


class Kind(enum.Enum):
    """How an execution ended."""

    RETURNED = "returned"  # exec returned `value`
    RELEASED = "released"  # exec called ctx.release
    RAISED = "raised"  # exec (or its process, or tasker running it) failed: reason, detail
    TIMED_OUT = "timed_out"  # ran past its timeout (`timeout_s`)
    CANCELLED = "cancelled"  # stopped for an admin's cancel before it ended (`reason`: how)
    BAD_INPUT = "bad_input"  # the payload does not decode (`reason`: the problem)
    NOT_STORED = "not_stored"  # the database refused its outcome (`reason`)
    HANDED_BACK = "handed_back"  # given back unfinished (graceful stop, waited too long)
    RESCUED = "rescued"  # the master took it from a stuck or dead instance (`reason`)


@dataclass(frozen=True)
class Ended:
    """How an execution ended: a `Kind` and what that kind carries.

    `next_at` / `next_delay_s` (s) are what `ctx.exec_after` / `ctx.release`
    asked for the next run; build one with the class methods below.
    """

    kind: Kind
    value: object = None
    reason: str = ""
    detail: str = ""
    next_at: dt.datetime | None = None
    next_delay_s: float | None = None
    timeout_s: float = 0.0
    error: type[BaseException] | None = None  # what exec raised, for the retry policy

    @classmethod
    def returned(
        cls, value: object, *, next_at: dt.datetime | None = None,
        next_delay_s: float | None = None,
    ) -> Ended:  # fmt: skip
        """exec returned `value` (the exec_after it set counts if the value cannot be stored)."""
        return cls(Kind.RETURNED, value=value, next_at=next_at, next_delay_s=next_delay_s)

    @classmethod
    def released(cls, *, next_at: dt.datetime | None, next_delay_s: float | None) -> Ended:
        """exec called `ctx.release`."""
        return cls(Kind.RELEASED, next_at=next_at, next_delay_s=next_delay_s)

    @classmethod
    def raised(
        cls, reason: str, detail: str = "", *, next_at: dt.datetime | None = None,
        next_delay_s: float | None = None, error: type[BaseException] | None = None,
    ) -> Ended:  # fmt: skip
        """The run failed: `reason` one line, `detail` a traceback, `error` the
        class of what `exec` raised (None: tasker's own failure running it,
        which always uses a run up)."""
        return cls(Kind.RAISED, reason=reason, detail=detail, next_at=next_at,
                   next_delay_s=next_delay_s, error=error)  # fmt: skip

    @classmethod
    def timed_out(cls, timeout_s: float) -> Ended:
        """The run took longer than its timeout (s)."""
        return cls(Kind.TIMED_OUT, timeout_s=timeout_s)

    @classmethod
    def cancelled(cls, how: str) -> Ended:
        """Stopped for a cancel before exec ended (`how`: never began, killed...)."""
        return cls(Kind.CANCELLED, reason=how)

    @classmethod
    def bad_input(cls, problem: str) -> Ended:
        """The input does not decode."""
        return cls(Kind.BAD_INPUT, reason=problem)

    @classmethod
    def not_stored(cls, reason: str) -> Ended:
        """The database refused the outcome."""
        return cls(Kind.NOT_STORED, reason=reason)

    @classmethod
    def handed_back(cls) -> Ended:
        """Given back unfinished."""
        return cls(Kind.HANDED_BACK)

    @classmethod
    def rescued(cls, reason: str) -> Ended:
        """Taken back by the master (`reason`: overdue, or its instance died)."""
        return cls(Kind.RESCUED, reason=reason)


def decide(
    ended: Ended,
    *,
    attempt: int,
    runs_left: int,
    cancel: bool = False,
    host: str | None = None,
    max_result_bytes: int | None = None,
    policy: Policy | None = None,
) -> Decision:
    """What an execution that ended so becomes (pure but for the errlog's clock
    and a user's `backoff` callable).

    `attempt` is the run's number, `runs_left` the task's `retry` column at
    its start, `cancel` whether an admin asked it to stop (the outcome is then
    `cancelled`'s), `host` names this machine in an errlog entry (default
    TASKER_FQDN), `max_result_bytes` bounds a result's JSON, `policy` is the
    class's retry policy (None: the defaults). Never raises.
    """
    if cancel or ended.kind is Kind.CANCELLED:
        return _under_cancel(ended, attempt, runs_left, host, max_result_bytes, policy)
    return _plain(ended, attempt, runs_left, host, max_result_bytes, policy)


@dataclass(frozen=True)
class Policy:
    """A class's retry policy (`MsgQ.retry_on`, `MsgQ.backoff`).

    Of what `exec` raises, `Fail` fails the task now and an `Exception` that
    is none of `retry_on` fails it now too (Celery's `autoretry_for`,
    procrastinate's `retry_exceptions`); the rest use a run up, then wait
    `backoff`. `SystemExit`, `KeyboardInterrupt` and tasker's own failures
    (timeouts, rescues, an outcome not stored) are no `Exception` a class
    names: they always use a run up, as a crash does.
    """

    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: retry.Backoff = None

    def fails_now(self, error: type[BaseException] | None) -> str | None:
        """The errlog note of why `error` ends the task now, or None when it may retry."""
        if error is None:
            return None
        if issubclass(error, Fail):
            return " (tasker.Fail: no more runs)"
        if issubclass(error, Exception) and not issubclass(error, self.retry_on):
            return " (not in retry_on: no more runs)"
        return None


DEFAULT_POLICY = Policy()


def _under_cancel(
    ended: Ended, attempt: int, runs_left: int, host: str | None, max_bytes: int | None,
    policy: Policy | None,
) -> Decision:  # fmt: skip
    how = {
        Kind.CANCELLED: ended.reason,
        Kind.TIMED_OUT: ABANDONED,  # past the grace of its cancel
        Kind.HANDED_BACK: STOPPED_BEFORE,
        Kind.RESCUED: FINISHED_BY_MASTER,
    }.get(ended.kind)
    if how is not None:
        return cancelled(None, attempt=attempt, how=how, host=host)
    was = _plain(ended, attempt, runs_left, host, max_bytes, policy)
    return cancelled(was, attempt=attempt, host=host)


def _plain(
    ended: Ended, attempt: int, runs_left: int, host: str | None, max_bytes: int | None,
    policy: Policy | None,
) -> Decision:  # fmt: skip
    kind = ended.kind
    backoff = policy.backoff if policy is not None else None

    def failure(reason: str, detail: str = "", **kw: Any) -> Decision:
        return failed(retry_left=runs_left, attempt=attempt, reason=reason, detail=detail,
                      host=host, backoff=backoff, **kw)  # fmt: skip

    if kind is Kind.RETURNED:
        try:
            return succeeded(ended.value, max_bytes=max_bytes)
        except BaseException as exc:  # not JSON, too big, or a hostile __str__/__float__
            return failure(text.describe(exc), traceback_below(exc), next_at=ended.next_at,
                           next_delay_s=ended.next_delay_s)  # fmt: skip
    if kind is Kind.RELEASED:
        return released(next_at=ended.next_at, next_delay_s=ended.next_delay_s)
    if kind is Kind.RAISED:
        now = (policy or DEFAULT_POLICY).fails_now(ended.error)
        return failure(ended.reason + (now or ""), ended.detail, next_at=ended.next_at,
                       next_delay_s=ended.next_delay_s, final=now is not None)  # fmt: skip
    if kind is Kind.TIMED_OUT:
        return failure(f"timeout: exec ran longer than {ended.timeout_s:g}s")
    if kind is Kind.BAD_INPUT:
        return bad_input(attempt=attempt, problem=ended.reason, host=host)
    if kind is Kind.NOT_STORED:
        return failure(ended.reason)
    if kind is Kind.HANDED_BACK:
        return handed_back()
    if kind is Kind.RESCUED:
        # Retried after the first, short back-off, not after its timeout.
        return failure(ended.reason, next_delay_s=retry.backoff_s(1))  # the master has no class
    return cancelled(None, attempt=attempt, how=ended.reason, host=host)


def traceback_below(exc: BaseException) -> str:
    """The traceback of `exc` without its outermost frame (the caller that
    caught it: tasker's own, so the user's code comes first), as text; empty
    when even formatting it fails (an exception's `__str__` may raise). Never
    raises."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # the exception's __str__ may raise here too
        return "".join(traceback.format_tb(tb)) if tb else ""

