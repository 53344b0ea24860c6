"""Abort of a running task, the pure parts: what its outcome becomes, what
its Context says, and how the consumer's shared state flags and frees it."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tasker import Context, MsgQ, TaskCancelled, defaults, outcome
from tasker.runtime.consumer.state import ConsumerState, Job
from tasker.runtime.execute import Started, execute

# --- outcome.cancelled: the one cancel rule --------------------------------------


def test_whatever_the_execution_did_the_row_fails_cancelled_without_retry() -> None:
    ran = [
        outcome.succeeded({"ok": 1}),
        outcome.failed(retry_left=3, attempt=2, reason="TaskCancelled: stop", detail="tb"),
        outcome.failed(retry_left=3, attempt=2, reason="ValueError: other"),
        outcome.released(next_at=None, next_delay_s=5.0),
        None,  # abandoned after the grace
    ]
    for was in ran:
        d = outcome.cancelled(was, attempt=2, host="h")
        assert (d.transition, d.take, d.result) == ("fail", 0, None)
        head = d.err.splitlines()[0]
        assert head.startswith("[attempt 2 on h at ") and head.endswith(outcome.CANCELLED_REASON)
    assert "not kept" in outcome.cancelled(ran[0], attempt=2).err
    assert "TaskCancelled: stop" in outcome.cancelled(ran[1], attempt=2).err
    assert "ValueError: other" in outcome.cancelled(ran[2], attempt=2).err
    assert "released" in outcome.cancelled(ran[3], attempt=2).err
    assert "abandoned" in outcome.cancelled(None, attempt=2).err


def test_a_cancellation_is_not_wrapped_twice() -> None:
    killed = outcome.cancelled(attempt=1, was=None, how="its process was killed", host="h")
    assert outcome.cancelled(killed, attempt=1, host="h") is killed
    # A task's own failure that merely mentions the words is still wrapped.
    own = outcome.failed(retry_left=3, attempt=1, reason=outcome.CANCELLED_REASON + " (not)")
    assert outcome.cancelled(own, attempt=1) is not own


# --- Context -------------------------------------------------------------------


def test_context_check_raises_once_cancelled() -> None:
    ctx = Context(5, "t", 1, 9)
    assert not ctx.cancelled
    ctx.check()  # no request: nothing happens
    ctx.mark_cancelled()
    assert ctx.cancelled
    with pytest.raises(TaskCancelled, match="task 5 was cancelled"):
        ctx.check()


class Polls(MsgQ):
    topic = "abort.polls"

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.log("step")
        ctx.check()
        return "finished"


def started(task_id: int = 1, worker_id: int = 77, timeout_ms: int = 60_000) -> Started:
    return Started(task_id, Polls.topic, "{}", timeout_ms, 3, 1, worker_id)


def test_execute_hands_exec_the_given_context() -> None:
    ctx = Context(1, Polls.topic, 1, 77)
    ctx.mark_cancelled()
    d, log_text = execute(Polls, started(), host="h", ctx=ctx)
    assert d.transition == "retry" and "TaskCancelled" in d.err
    assert "step" in log_text
    d, _ = execute(Polls, started(), host="h")  # a fresh Context: not cancelled
    assert d.transition == "succeed"


# --- ConsumerState: flag, convert, abandon ---------------------------------------------


def running_job(state: ConsumerState, task_id: int = 1, worker_id: int = 77) -> Job:
    state.new_connection()
    state.received(Polls.topic, SimpleNamespace(delivery_tag=task_id), [(task_id, 5)])
    _done, starts, _expired = state.take_work(0.0)
    (job,) = starts
    row = SimpleNamespace(**started(task_id, worker_id).__dict__, cancel_requested=None)
    row.timeout, row.id = row.timeout_ms, task_id
    assert state.started([job], [row]) == []
    assert state.lanes[Polls.topic].ready.get_nowait() is job
    return job


def test_a_flagged_thread_execution_is_told_and_its_outcome_is_cancelled() -> None:
    state = ConsumerState({Polls.topic: Polls}, prefetch=0, host="h")
    job = running_job(state)
    ctx = Context(1, Polls.topic, 1, 77)
    assert state.begin(job, 60.0, ctx) is not None
    assert state.cancel_requested([(1, 12345)]) == []  # another execution of the task
    assert state.cancel_requested([(1, 77)]) == [job]
    assert ctx.cancelled
    assert state.cancel_requested([(1, 77)]) == []  # once
    assert state.finish(job, outcome.succeeded("late"), "")
    done, _starts, _expired = state.take_work(0.0)
    ((_job, decision, _log),) = done
    assert decision.transition == "fail" and outcome.CANCELLED_REASON in decision.err


def test_a_thread_that_ignores_the_request_is_abandoned_after_the_grace() -> None:
    state = ConsumerState({Polls.topic: Polls}, prefetch=0, host="h")
    job = running_job(state)
    assert state.begin(job, 60.0, Context(1, Polls.topic, 1, 77)) is not None
    flagged_at = time.monotonic()
    assert state.cancel_requested([(1, 77)]) == [job]
    deadline = time.monotonic() + 10
    done: list = []
    expired: list[str] = []
    while not done and time.monotonic() < deadline:
        done, _starts, expired = state.take_work(0.5)
    assert time.monotonic() - flagged_at >= defaults.CANCEL_GRACE_S * 0.99
    ((_job, decision, _log),) = done
    assert expired == [Polls.topic]  # its worker is replaced
    assert "abandoned" in decision.err and decision.transition == "fail"
    assert not state.finish(job, outcome.succeeded(1), "")  # the late outcome is dropped
    assert not state.lanes[Polls.topic].running  # the slot is free


def test_a_task_cancelled_before_its_start_is_flagged_at_begin() -> None:
    state = ConsumerState({Polls.topic: Polls}, prefetch=0, host="h")
    state.new_connection()
    state.received(Polls.topic, SimpleNamespace(delivery_tag=1), [(1, 5)])
    (job,) = state.take_work(0.0)[1]
    row = SimpleNamespace(**started().__dict__, cancel_requested="2026-01-01")
    row.timeout = row.timeout_ms
    state.started([job], [row])
    ctx = Context(1, Polls.topic, 1, 77)
    state.begin(job, 60.0, ctx)
    assert job.cancelled and ctx.cancelled
