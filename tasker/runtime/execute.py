"""Run one execution and turn whatever happened into a `Decision` (never raises).

Whatever `exec` does becomes the task's outcome: a return value is its
result when it is JSON (else the run fails naming the type), any
`BaseException` (`SystemExit`, `KeyboardInterrupt`, an exception whose
`__str__` raises) is a failure with the real reason, and input that does
not decode fails at once without charging a run. The caller runs this in a
worker thread or in the child process of `tasker.runtime.isolation`.
"""

from __future__ import annotations

import datetime as dt
import json
import traceback
from dataclasses import dataclass

from tasker import outcome, text
from tasker.context import Context
from tasker.msgq import MsgQ

RESULT_MAX_BYTES = 1024 * 1024
"""A result larger than this (JSON, UTF-8) fails the run instead of being
stored: cutting JSON would store something that is not JSON."""


@dataclass(frozen=True)
class Started:
    """The row of an execution that has just moved to `running`."""

    id: int
    topic: str
    input: str
    timeout_ms: int
    retry: int
    attempts: int
    worker_id: int
    linked: bool = False  # in a chain or group, or has a result topic
    chain_step: int | None = None


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
    try:
        msg = cls.decode(task.input)
    except BaseException as exc:  # a PayloadError, or a bug in a custom decoder
        problem = _problem(exc)
        if task.chain_step is not None and task.chain_step > 1:
            problem = problem.removeprefix(f"{task.topic}: ")
            problem = (
                f"the result of chain step {task.chain_step - 1} does not decode into "
                f"{task.topic} (step {task.chain_step}): {problem}"
            )
        return outcome.bad_input(attempt=task.attempts, problem=problem, host=host), ""
    try:
        value = msg.exec(ctx, task.worker_id)
        if ctx.released:
            decision = outcome.released(next_at=ctx.next_at, next_delay_s=ctx.next_delay_s)
        else:
            decision = outcome.succeeded(value, max_bytes=RESULT_MAX_BYTES)
    except BaseException as exc:  # anything the task raises is its outcome
        decision = failure(task, ctx, text.describe(exc), user_traceback(exc), host=host)
    return decision, ctx.log_text()


def _problem(exc: BaseException) -> str:
    message = text.describe(exc)
    # PayloadError's message already names the topic and field; keep it bare.
    return message.split(": ", 1)[1] if message.startswith("PayloadError: ") else message


def user_traceback(exc: BaseException) -> str:
    """The traceback from the user's `exec` down, without tasker's own frame
    (empty when even formatting it fails)."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # the exception's __str__ may raise here too
        return "".join(traceback.format_tb(tb)) if tb else ""


def failure(
    task: Started, ctx: Context, reason: str, detail: str, *, host: str | None = None
) -> outcome.Decision:
    """A failed run, honouring `ctx.exec_after` for the next one."""
    return outcome.failed(
        retry_left=task.retry,
        attempt=task.attempts,
        reason=reason,
        detail=detail,
        next_at=ctx.next_at,
        next_delay_s=ctx.next_delay_s,
        host=host,
    )


def timed_out(task: Started, *, host: str | None = None) -> outcome.Decision:
    """The run took longer than its timeout."""
    return outcome.failed(
        retry_left=task.retry,
        attempt=task.attempts,
        reason=f"timeout: exec ran longer than {task.timeout_ms / 1000:g}s",
        host=host,
    )


def dump_decision(d: outcome.Decision) -> str:
    """JSON of a decision, for the pipe between a child process and its parent."""
    return json.dumps(
        {
            "transition": d.transition,
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
        transition=str(data["transition"]),
        take=int(data["take"]),
        err=str(data["err"]),
        result=data["result"],
        at=at,
        delay_s=float(data["delay_s"]),
    )
