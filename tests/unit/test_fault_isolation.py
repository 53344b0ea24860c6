"""Pure pieces of fault isolation: storable text, checked times, hostile
`exec` turned into outcomes, bounded contexts, and the supervision rule."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from typing import Any

import pytest

from tasker import Context, MsgQ, text, when
from tasker.exceptions import DatabaseError, InvalidTime
from tasker.runtime.execute import RESULT_MAX_BYTES, Started, execute
from tasker.runtime.service import Pass, Service, Supervision

# --- text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("plain", "plain"),
        ("caf\udce9.txt", "caf\\udce9.txt"),
        ("a\x00b", "a\\x00b"),
        ("\ud800\x00é🙂", "\\ud800\\x00é🙂"),
        ("日本語 🙂 ünïcödé", "日本語 🙂 ünïcödé"),
    ],
)
def test_escape_keeps_text_and_escapes_what_no_database_stores(raw: str, stored: str) -> None:
    out = text.escape(raw)
    assert out == stored
    out.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in out


def test_cut_keeps_64_kib_and_says_how_much_was_cut() -> None:
    big = "é" * 100_000  # 200,000 bytes of UTF-8
    out = text.cut(big)
    head, marker = out.rsplit("\n", 1)
    assert len(head.encode()) <= text.ENTRY_MAX_BYTES
    assert marker == f"... [cut {200_000 - len(head.encode())} bytes]"
    assert text.cut("short") == "short"


def test_storable_escapes_before_cutting() -> None:
    out = text.storable("\x00" * 100_000)
    assert out is not None and "\x00" not in out and "[cut " in out


class EvilStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class EvilBoth(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")

    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_describe_survives_exceptions_whose_str_raises() -> None:
    assert text.describe(ValueError("x")) == "ValueError: x"
    assert text.describe(SystemExit(3)) == "SystemExit: 3"
    assert text.describe(EvilStr()).startswith("EvilStr: EvilStr(")
    assert text.describe(EvilBoth()) == "EvilBoth: <unprintable EvilBoth>"


# --- when ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [dt.timedelta(days=30), dt.timedelta(days=3650), 86_400 * 30, 0.001, -5]
)
def test_any_delay_a_datetime_can_hold_is_planned(value: Any) -> None:
    at, ms = when.plan(value)
    assert at is None
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    assert ms == round(seconds * 1000)


def test_absolute_times_become_aware_utc() -> None:
    naive = dt.datetime(9999, 1, 1)
    assert when.plan(naive) == (naive.replace(tzinfo=dt.timezone.utc), 0)
    berlin = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    at, _ = when.plan(berlin)
    assert at == berlin and at is not None and at.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "value", [math.inf, -math.inf, math.nan, 1e300, dt.timedelta(days=999_999_999), "10", True]
)
def test_impossible_delays_are_refused_where_given(value: Any) -> None:
    with pytest.raises(InvalidTime) as info:
        when.plan(value, what="exec_after")
    assert "exec_after" in str(info.value)
    assert isinstance(info.value, ValueError)


# --- execute: whatever exec does is its outcome --------------------------------------


def started(cls: type[MsgQ], retry: int = 3) -> Started:
    return Started(1, cls.topic, "{}", 30_000, retry, 1, 7)


class Exits(MsgQ):
    topic = "h.exit"

    def exec(self, ctx: Context, worker_id: int) -> object:
        sys.exit(3)


class Interrupts(MsgQ):
    topic = "h.interrupt"

    def exec(self, ctx: Context, worker_id: int) -> object:
        raise KeyboardInterrupt


class RaisesEvil(MsgQ):
    topic = "h.evil"

    def exec(self, ctx: Context, worker_id: int) -> object:
        raise EvilBoth()


class Returns(MsgQ):
    topic = "h.returns"
    kind: str = "set"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return {
            "set": {1, 2},
            "nan": {"x": float("nan")},
            "huge": "x" * (RESULT_MAX_BYTES + 1),
            "odd": "caf\udce9\x00",
        }[self.kind]


class AsksInfinity(MsgQ):
    topic = "h.inf"

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.exec_after(float("inf"))
        return None


class LogsALot(MsgQ):
    topic = "h.logs"

    def exec(self, ctx: Context, worker_id: int) -> object:
        for _ in range(200):
            ctx.log("y" * 100_000)
        ctx.log(EvilBoth())
        return None


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (Exits, "SystemExit: 3"),
        (Interrupts, "KeyboardInterrupt"),
        (RaisesEvil, "EvilBoth: <unprintable"),
    ],
)
def test_base_exceptions_and_unprintable_ones_are_failures(cls: type[MsgQ], reason: str) -> None:
    d, _ = execute(cls, started(cls))
    assert (d.transition, d.take) == ("retry", 1)
    assert reason in d.err


@pytest.mark.parametrize(
    ("kind", "reason"), [("set", "set"), ("nan", "NaN"), ("huge", "over the limit")]
)
def test_results_that_are_not_storable_json_fail_the_run(kind: str, reason: str) -> None:
    task = Started(1, Returns.topic, json.dumps({"kind": kind}), 30_000, 3, 1, 7)
    d, _ = execute(Returns, task)
    assert d.transition == "retry" and reason.lower() in d.err.lower()


def test_odd_text_in_a_result_is_kept_as_json_escapes() -> None:
    task = Started(1, Returns.topic, '{"kind": "odd"}', 30_000, 3, 1, 7)
    d, _ = execute(Returns, task)
    assert d.transition == "succeed"
    assert d.result is not None and d.result.isascii()
    assert json.loads(d.result) == "caf\udce9\x00"


def test_an_impossible_delay_fails_inside_exec_with_the_reason() -> None:
    d, _ = execute(AsksInfinity, started(AsksInfinity))
    assert d.transition == "retry" and "InvalidTime" in d.err and "ctx.exec_after" in d.err


def test_a_task_logging_in_a_loop_is_bounded() -> None:
    d, log_text = execute(LogsALot, started(LogsALot))
    assert d.transition == "succeed"
    assert len(log_text.encode()) < text.LOG_MAX_BYTES + 200
    assert log_text.endswith("more log line(s) not kept: over 1048576 bytes]\n")
    assert text.storable(log_text, text.LOG_MAX_BYTES + 1024) == log_text  # the store keeps it


def test_context_log_accepts_unprintable_objects() -> None:
    ctx = Context(1, "t", 1, 1)
    ctx.log(EvilBoth())
    assert "<unprintable EvilBoth>" in ctx.log_text()


# --- the supervision rule ----------------------------------------------------------------


class Scripted(Service):
    """run_once follows a script of exceptions and waits."""

    name = "scripted"

    def __init__(self, script: list[Any], max_failures: int = 2) -> None:
        self.fatal: list[str] = []
        super().__init__(Supervision(self.fatal.append, max_failures=max_failures, retry_s=0.01))
        self.script = script

    def run_once(self) -> Pass:
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return Pass(step)


def test_an_unexpected_error_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Scripted([ValueError("bug"), 0.5])
    s.doing = "sweeping 'x'"
    assert s.supervised_pass() == pytest.approx(0.01)
    assert "scripted failed while sweeping 'x'" in caplog.text and "ValueError: bug" in caplog.text
    assert s.supervised_pass() == 0.5
    assert s.failures == 0 and not s.fatal


def test_a_loop_that_cannot_go_on_stops_the_instance() -> None:
    s = Scripted([DatabaseError("gone")] * 3)
    assert s.supervised_pass() is not None
    assert s.supervised_pass() is not None
    assert s.supervised_pass() is None
    assert s.fatal == ["scripted gave up on the database after 2 retries while starting: gone"]


def test_a_base_exception_in_a_service_is_fatal_at_once() -> None:
    s = Scripted([SystemExit(1)])
    assert s.supervised_pass() is None
    assert s.fatal and "SystemExit" in s.fatal[0]


def test_a_started_service_that_died_is_not_alive() -> None:
    s = Scripted([SystemExit(1)])
    s.start()
    from tests.waiting import wait_for

    wait_for(lambda: not s.alive(), 5, "the loop to end")
    assert s.fatal
    s.stop()
    assert s.alive()  # stopped on purpose: nothing to report
