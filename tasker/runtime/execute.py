"""Run one execution and turn whatever happened into a `Decision` (never raises):
`run_exec` says how it ended (an `outcome.Ended`), `decide` applies the rule.

Whatever `exec` does becomes the task's outcome: a return value is its
result when it is JSON (else the run fails naming the type), any
`BaseException` (`SystemExit`, `KeyboardInterrupt`, an exception whose
`__str__` raises) is a failure with the real reason, and input that does
not decode fails at once without charging a run. The caller runs this in a
worker thread or in the child process of `tasker.runtime.isolation`; an
`async def exec` is awaited through `arun_exec` on the instance's loop
(`tasker.runtime.eventloop`), or run on a loop of its own by `run_exec`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from tasker import outcome, text
from tasker.context import Context
from tasker.msgq import MsgQ, is_async
from tasker.runtime import tracing

RESULT_MAX_BYTES = 1024 * 1024
"""A result larger than this (JSON, UTF-8) fails the run instead of being
stored: cutting JSON would store something that is not JSON."""


@dataclass(frozen=True)
class Started:
    """The row of an execution that has just moved to `running` (what the
    start statement returns), for the consumer and `tasker.testing` alike."""

    id: int
    topic: str
    input: str
    timeout_ms: int
    retry: int  # runs left at its start
    attempts: int  # this run's number
    worker_id: int  # its claim's token: every later write is guarded by it
    linked: bool = False  # in a chain or group, or has a result topic
    chain_step: int | None = None
    cancelled: bool = False  # an admin cancelled it before this start
    traceparent: str | None = None  # the publish's W3C trace context, when traced
    queue_wait_s: float | None = None  # from its publish to this start

    @classmethod
    def from_row(cls, row: Any) -> Started:
        """From a row of `store.task_start_if_token` (`timeout` in ms)."""
        return cls(
            id=row.id,
            topic=row.topic,
            input=row.input,
            timeout_ms=row.timeout,
            retry=row.retry,
            attempts=row.attempts,
            worker_id=row.worker_id,
            linked=bool(row.linked),
            chain_step=row.chain_step,
            cancelled=getattr(row, "cancel_requested", None) is not None,
            traceparent=getattr(row, "traceparent", None),
            queue_wait_s=_waited(row),
        )

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000


def _waited(row: Any) -> float | None:
    created, started = getattr(row, "created", None), getattr(row, "started", None)
    if created is None or started is None:
        return None
    return max(0.0, float((started - created).total_seconds()))


def decide(
    task: Started, ended: outcome.Ended, *, cancel: bool = False, host: str | None = None,
    policy: outcome.Policy | None = None,
) -> outcome.Decision:  # fmt: skip
    """`outcome.decide` for this execution (its attempt, runs left, result
    limit, and its class's retry policy where the caller has the class)."""
    return outcome.decide(
        ended,
        attempt=task.attempts,
        runs_left=task.retry,
        cancel=cancel,
        host=host,
        max_result_bytes=RESULT_MAX_BYTES,
        policy=policy,
    )


def execute(
    cls: type[MsgQ], task: Started, *, host: str | None = None, ctx: Context | None = None
) -> tuple[outcome.Decision, str]:
    """Decode the input, run `exec`, decide; returns the decision and the log text.

    Never raises (any `BaseException` of the task's code is its outcome);
    `host` names this machine in an errlog entry (TASKER_FQDN); `ctx` is the
    Context to hand `exec` (the consumer keeps it to tell of a cancel), a
    new one when None.
    """
    if ctx is None:
        ctx = Context(task.id, task.topic, task.attempts, task.worker_id)
    ended = run_exec(cls, task, ctx)
    return decide(task, ended, host=host, policy=cls.retry_policy()), ctx.log_text()


def run_exec(cls: type[MsgQ], task: Started, ctx: Context) -> outcome.Ended:
    """Decode the input and run `exec`: how it ended. Never raises.

    An `async def exec` runs here on a new event loop of its own, under its
    timeout (`asyncio.run`: a child process, `tasker.testing`); the consumer
    runs it on the instance's loop through `arun_exec` instead.
    """
    msg = _decode(cls, task)
    if isinstance(msg, outcome.Ended):
        return msg
    if is_async(cls):
        try:
            return asyncio.run(_arun_msg(msg, task, ctx))
        except BaseException as exc:  # e.g. a loop already runs in this thread
            return _raised(exc, ctx)
    try:
        value = msg.exec(ctx, task.worker_id)
    except BaseException as exc:  # anything the task raises is its outcome
        return _raised(exc, ctx)
    return _returned(value, ctx)


async def arun_exec(cls: type[MsgQ], task: Started, ctx: Context) -> outcome.Ended:
    """`run_exec` of an `async def exec`, awaited on the caller's loop: the
    coroutine is cancelled at the task's timeout (`timeout`), and a cancel of
    the awaiting task while `ctx.cancelled` is the admin's cancel. Raises
    `asyncio.CancelledError` only when cancelled for another reason (the
    execution was abandoned: its outcome is recorded elsewhere)."""
    msg = _decode(cls, task)
    if isinstance(msg, outcome.Ended):
        return msg
    return await _arun_msg(msg, task, ctx)


async def _arun_msg(msg: MsgQ, task: Started, ctx: Context) -> outcome.Ended:
    # call_later rather than asyncio.timeout: Python 3.10 has no asyncio.timeout.
    me = asyncio.current_task()
    assert me is not None
    fired: list[bool] = []

    def expire() -> None:
        fired.append(True)
        me.cancel()

    clock = asyncio.get_running_loop().call_later(task.timeout_s, expire)
    try:
        value = await msg.exec(ctx, task.worker_id)  # type: ignore[misc]
    except asyncio.CancelledError:
        if fired:
            return outcome.Ended.timed_out(task.timeout_s)
        if ctx.cancelled:
            return outcome.Ended.cancelled("its coroutine was cancelled")
        raise
    except BaseException as exc:  # anything the task raises is its outcome
        return _raised(exc, ctx)
    finally:
        clock.cancel()
    return _returned(value, ctx)


def _decode(cls: type[MsgQ], task: Started) -> MsgQ | outcome.Ended:
    """The task's message, or how it ended when its input does not decode."""
    try:
        return cls.decode(task.input)
    except BaseException as exc:  # a PayloadError, or a bug in a custom decoder
        problem = _problem(exc)
        if task.chain_step is not None and task.chain_step > 1:
            problem = problem.removeprefix(f"{task.topic}: ")
            problem = (
                f"the result of chain step {task.chain_step - 1} does not decode into "
                f"{task.topic} (step {task.chain_step}): {problem}"
            )
        return outcome.Ended.bad_input(problem)


def _raised(exc: BaseException, ctx: Context) -> outcome.Ended:
    tracing.record_exception(exc)
    return outcome.Ended.raised(text.describe(exc), outcome.traceback_below(exc), error=type(exc),
                                next_at=ctx.next_at, next_delay_s=ctx.next_delay_s)  # fmt: skip


def _returned(value: object, ctx: Context) -> outcome.Ended:
    if ctx.released:
        return outcome.Ended.released(next_at=ctx.next_at, next_delay_s=ctx.next_delay_s)
    return outcome.Ended.returned(value, next_at=ctx.next_at, next_delay_s=ctx.next_delay_s)


def _problem(exc: BaseException) -> str:
    message = text.describe(exc)
    # PayloadError's message already names the topic and field; keep it bare.
    return message.split(": ", 1)[1] if message.startswith("PayloadError: ") else message


def dump_decision(d: outcome.Decision) -> str:
    """JSON of a decision, for the pipe between a child process and its parent."""
    return json.dumps(
        {
            "transition": d.transition.value,
            "take": d.take,
            "err": d.err,
            "result": d.result,
            "at": d.at.isoformat() if d.at else None,
            "delay_s": d.delay_s,
        }
    )


def load_decision(raw: str | bytes) -> outcome.Decision:
    """The inverse of `dump_decision`; ValueError/KeyError on a damaged message."""
    data = json.loads(raw)
    at = dt.datetime.fromisoformat(data["at"]) if data.get("at") else None
    return outcome.Decision(
        transition=outcome.Transition(data["transition"]),
        take=int(data["take"]),
        err=str(data["err"]),
        result=data["result"],
        at=at,
        delay_s=float(data["delay_s"]),
    )
