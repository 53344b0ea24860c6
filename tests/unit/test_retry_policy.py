"""The retry policy per class (DESIGN 1: `retry_on`, `tasker.Fail`, `backoff`):
each path of `outcome.decide` as a pure function, and the class checks."""

from __future__ import annotations

import datetime as dt
import logging
import math

import pytest

import tasker
from tasker import ConfigurationError, MsgQ, outcome, retry
from tasker.context import Context
from tasker.outcome import Ended, Policy, Transition
from tasker.runtime.execute import Started, execute

AT = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def decide(ended: Ended, policy: Policy | None, *, runs_left: int = 3) -> outcome.Decision:
    return outcome.decide(ended, attempt=2, runs_left=runs_left, host="h", policy=policy)


def raised(error: type[BaseException], **kw: object) -> Ended:
    return Ended.raised(f"{error.__name__}: boom", "tb", error=error, **kw)  # type: ignore[arg-type]


ONLY_CONN = Policy(retry_on=(ConnectionError,))


def test_an_exception_in_retry_on_uses_a_run_up() -> None:
    d = decide(raised(ConnectionResetError), ONLY_CONN)  # a subclass counts
    assert (d.transition, d.take) == (Transition.RETRY, 1) and d.delay_s > 0


def test_an_exception_not_in_retry_on_fails_now_whatever_runs_are_left() -> None:
    d = decide(raised(ValueError), ONLY_CONN, runs_left=50)
    assert (d.transition, d.take) == (Transition.FAIL, 1)
    assert "ValueError: boom (not in retry_on: no more runs)" in d.err and "tb" in d.err


def test_fail_ends_the_task_now_even_when_retry_on_names_it() -> None:
    for policy in (None, Policy(), Policy(retry_on=(Exception,)), Policy(retry_on=(tasker.Fail,))):
        d = decide(raised(tasker.Fail), policy, runs_left=9)
        assert d.transition == Transition.FAIL and "tasker.Fail: no more runs" in d.err


def test_the_default_policy_retries_any_exception() -> None:
    for policy in (None, Policy()):
        assert decide(raised(ValueError), policy).transition == Transition.RETRY


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt])
def test_process_level_exits_always_use_a_run_up(error: type[BaseException]) -> None:
    assert decide(raised(error), Policy(retry_on=())).transition == Transition.RETRY


def test_tasker_own_failures_use_a_run_up_whatever_the_policy() -> None:
    nothing = Policy(retry_on=())
    assert decide(Ended.raised("the process died"), nothing).transition == Transition.RETRY
    assert decide(Ended.timed_out(1.0), nothing).transition == Transition.RETRY
    assert decide(Ended.not_stored("refused"), nothing).transition == Transition.RETRY


def test_an_empty_retry_on_fails_every_exception_now() -> None:
    assert decide(raised(ConnectionError), Policy(retry_on=())).transition == Transition.FAIL


def test_a_fixed_backoff_is_that_many_seconds() -> None:
    d = decide(raised(ValueError), Policy(backoff=7))
    assert (d.transition, d.delay_s, d.at) == (Transition.RETRY, 7.0, None)


def test_a_callable_backoff_is_asked_with_the_attempt() -> None:
    d = decide(raised(ValueError), Policy(backoff=lambda n: n * 10.0))
    assert d.delay_s == 20.0  # attempt 2


def test_exec_after_wins_over_the_backoff() -> None:
    d = decide(raised(ValueError, next_at=AT), Policy(backoff=7))
    assert (d.at, d.delay_s) == (AT, 0.0)


def test_backoff_does_not_matter_when_no_runs_remain() -> None:
    assert decide(raised(ValueError), Policy(backoff=7), runs_left=1).transition == Transition.FAIL


@pytest.mark.parametrize(
    "bad",
    [lambda n: math.nan, lambda n: math.inf, lambda n: -1, lambda n: "5", lambda n: True,
     lambda n: 10**400, lambda n: 1 / 0],
)
def test_a_callable_giving_no_delay_falls_back_to_the_default_and_logs(
    bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tasker.retry"):
        s = retry.policy_backoff_s(bad, 3, rand=lambda: 0.5)  # type: ignore[arg-type]
    assert s == retry.backoff_s(3, rand=lambda: 0.5) == 4.0
    assert "using the default back-off" in caplog.text


# --- the class attributes, checked when the class is defined ------------------------


@pytest.mark.parametrize(
    ("attrs", "named"),
    [
        ({"retry_on": ConnectionError}, "retry_on"),  # a class, not a tuple
        ({"retry_on": [ConnectionError]}, "retry_on"),
        ({"retry_on": ("ConnectionError",)}, "retry_on"),
        ({"retry_on": (int,)}, "retry_on"),
        ({"backoff": math.nan}, "backoff"),
        ({"backoff": math.inf}, "backoff"),
        ({"backoff": -1}, "backoff"),
        ({"backoff": 10**400}, "backoff"),
        ({"backoff": True}, "backoff"),
        ({"backoff": "5s"}, "backoff"),
    ],
)
def test_bad_policy_attributes_are_refused_naming_them(
    attrs: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"`{named}`"):
        type("Bad", (MsgQ,), {"topic": "p.bad", **attrs})


class Flaky(MsgQ):
    topic = "p.flaky"
    retry_on = (ConnectionError,)
    backoff = staticmethod(lambda attempt: 0.25 * attempt)
    kind: str = "conn"

    def exec(self, ctx: Context, worker_id: int) -> object:
        if self.kind == "fail":
            raise tasker.Fail("card declined")
        raise ConnectionError("down") if self.kind == "conn" else ValueError("bad")


@pytest.mark.parametrize(
    ("kind", "transition", "delay_s", "says"),
    [("conn", "retry", 0.5, "ConnectionError: down"),
     ("value", "fail", 0.0, "ValueError: bad (not in retry_on"),
     ("fail", "fail", 0.0, "Fail: card declined (tasker.Fail")],
)
def test_execute_applies_the_class_policy(
    kind: str, transition: str, delay_s: float, says: str
) -> None:
    task = Started(1, Flaky.topic, f'{{"kind": "{kind}"}}', 30_000, 5, 2, 7)
    d, _ = execute(Flaky, task)
    assert (d.transition, d.delay_s) == (transition, delay_s) and says in d.err


class AsyncFlaky(MsgQ):
    topic = "p.async"
    retry_on = (ConnectionError,)
    backoff = 3

    async def exec(self, ctx: Context, worker_id: int) -> object:  # type: ignore[override]
        raise ValueError("bad")


def test_an_async_exec_follows_the_same_policy() -> None:
    d, _ = execute(AsyncFlaky, Started(1, AsyncFlaky.topic, "{}", 30_000, 5, 1, 7))
    assert d.transition == "fail" and "not in retry_on" in d.err
