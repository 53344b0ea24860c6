"""`outcome.decide`: every way an execution ends -> its Decision, and the
one cancel rule wherever the cancel is observed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from types import SimpleNamespace

import pytest

from tasker import outcome
from tasker.outcome import Ended, Transition
from tasker.runtime.execute import Started, dump_decision, load_decision
from tasker.store.finish import Finish, finish_row

AT = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def decide(ended: Ended, *, runs_left: int = 3, cancel: bool = False) -> outcome.Decision:
    return outcome.decide(
        ended, attempt=2, runs_left=runs_left, cancel=cancel, host="h", max_result_bytes=64
    )


def test_returned_succeeds_with_its_json() -> None:
    d = decide(Ended.returned({"a": 1}))
    assert (d.transition, d.take, d.result, d.err) == (Transition.SUCCEED, 0, '{"a": 1}', "")


@pytest.mark.parametrize(
    ("value", "reason"),
    [(object(), "not JSON-serialisable"), (float("nan"), "ValueError"), ("x" * 100, "over")],
)
def test_a_result_that_cannot_be_stored_is_a_failure(value: object, reason: str) -> None:
    d = decide(Ended.returned(value, next_delay_s=7.0))
    assert (d.transition, d.take, d.result, d.delay_s) == (Transition.RETRY, 1, None, 7.0)
    assert reason in d.err and d.err.startswith("[attempt 2 on h at ")


def test_released_goes_back_to_pending_uncharged() -> None:
    d = decide(Ended.released(next_at=AT, next_delay_s=None))
    assert (d.transition, d.take, d.at, d.delay_s) == (Transition.HAND_BACK, 0, AT, 0.0)


def test_raised_retries_honouring_exec_after_then_fails() -> None:
    d = decide(Ended.raised("ValueError: boom", "tb line", next_at=AT))
    assert (d.transition, d.take, d.at) == (Transition.RETRY, 1, AT)
    assert "ValueError: boom" in d.err and "tb line" in d.err
    assert decide(Ended.raised("x"), runs_left=1).transition == Transition.FAIL
    backoff = decide(Ended.raised("x"))
    assert backoff.at is None and backoff.delay_s > 0


def test_timed_out_names_the_timeout() -> None:
    d = decide(Ended.timed_out(1.5))
    assert (d.transition, d.take) == (Transition.RETRY, 1)
    assert "timeout: exec ran longer than 1.5s" in d.err
    assert decide(Ended.timed_out(1.5), runs_left=1).transition == Transition.FAIL


def test_bad_input_fails_at_once_uncharged() -> None:
    d = decide(Ended.bad_input("missing field 'x'"))
    assert (d.transition, d.take) == (Transition.FAIL, 0)
    assert "bad input: missing field 'x'" in d.err


def test_not_stored_is_a_charged_failure() -> None:
    d = decide(Ended.not_stored("could not store this outcome (succeed): too big"))
    assert (d.transition, d.take) == (Transition.RETRY, 1) and "could not store" in d.err


def test_handed_back_is_uncharged() -> None:
    d = decide(Ended.handed_back())
    assert (d.transition, d.take, d.err, d.delay_s) == (Transition.HAND_BACK, 0, "", 0.0)


def test_rescued_retries_after_the_first_short_backoff() -> None:
    d = decide(Ended.rescued("instance 4 stopped beating"))
    assert (d.transition, d.take) == (Transition.RETRY, 1)
    assert 0 < d.delay_s <= 1.2 and "instance 4" in d.err
    assert decide(Ended.rescued("x"), runs_left=1).transition == Transition.FAIL


def test_cancelled_fails_uncharged_saying_how() -> None:
    d = decide(Ended.cancelled("its process was killed"))
    assert (d.transition, d.take, d.result) == (Transition.FAIL, 0, None)
    head, _, rest = d.err.partition("\n")
    assert head.endswith(outcome.CANCELLED_REASON) and "its process was killed" in rest


@pytest.mark.parametrize(
    ("ended", "says"),
    [
        (Ended.returned(1), "not kept"),
        (Ended.released(next_at=None, next_delay_s=1.0), "released"),
        (Ended.raised("TaskCancelled: stop"), "TaskCancelled: stop"),
        (Ended.bad_input("nope"), "bad input: nope"),
        (Ended.timed_out(1.0), outcome.ABANDONED),
        (Ended.handed_back(), outcome.STOPPED_BEFORE),
        (Ended.rescued("overdue"), outcome.FINISHED_BY_MASTER),
        (Ended.cancelled("never began"), "never began"),
    ],
)
def test_under_a_cancel_every_ending_fails_uncharged(ended: Ended, says: str) -> None:
    d = decide(ended, cancel=True, runs_left=5)
    assert (d.transition, d.take, d.result) == (Transition.FAIL, 0, None)
    assert d.err.splitlines()[0].endswith(outcome.CANCELLED_REASON) and says in d.err
    assert outcome.cancelled(d, attempt=2) is d  # observed again: not wrapped twice


def test_decision_transition_is_typed_and_compares_as_its_name() -> None:
    d = outcome.Decision("retry", take=1)
    assert d.transition is Transition.RETRY and d.transition == "retry"
    assert d.target.value == "retry"
    with pytest.raises(ValueError):
        outcome.Decision("teleport")
    again = load_decision(dump_decision(decide(Ended.raised("x", next_at=AT))))
    assert again.transition is Transition.RETRY and again.at == AT


def test_store_rows_take_seconds_and_write_milliseconds() -> None:
    d = outcome.Decision(Transition.RETRY, take=1, err="e", delay_s=2.5)
    row = finish_row(Finish(7, 99, d, "log", True))
    assert row == {"tid": 7, "wid": 99, "log": "log", "result": None, "take": 1, "err": "e",
                   "at": None, "delay_ms": 2500, "linked": True, "ago_ms": None,
                   "end_ms": None}  # fmt: skip
    began = finish_row(Finish(7, 99, d, "log", True, began_s_ago=1.25))
    assert began["ago_ms"] == 1250  # when exec began: seconds in, milliseconds written
    ended = finish_row(Finish(7, 99, d, "log", True, began_s_ago=1.25, ended_s_ago=0.5))
    assert ended["end_ms"] == 500  # when exec ended, the same way


def test_started_from_a_start_row() -> None:
    row = SimpleNamespace(id=1, topic="t", input="{}", timeout=1500, retry=3, attempts=1,
                          worker_id=9, linked=None, chain_step=None,
                          cancel_requested=AT)  # fmt: skip
    s = Started.from_row(row)
    assert (s.id, s.timeout_ms, s.timeout_s, s.worker_id, s.linked, s.cancelled) == (
        1, 1500, 1.5, 9, False, True
    )
    plain = SimpleNamespace(**{**row.__dict__, "cancel_requested": None})
    assert not Started.from_row(plain).cancelled


def test_started_crosses_the_child_pipe_as_json() -> None:
    s = Started(id=1, topic="t", input="{}", timeout_ms=1500, retry=3, attempts=2, worker_id=9,
                linked=True, chain_step=2, cancelled=False)  # fmt: skip
    assert Started(**json.loads(json.dumps(dataclasses.asdict(s)))) == s


def test_traceback_below_drops_the_catching_frame() -> None:
    def user_code() -> None:
        raise ValueError("deep")

    try:
        user_code()
    except ValueError as exc:
        text = outcome.traceback_below(exc)
    assert "user_code" in text and "ValueError: deep" in text
    assert "test_traceback_below_drops_the_catching_frame" not in text
