"""What each hostile task (tests/fixtures/hostile.py) must become, and the checks
every outcome passes: one run charged at most, the real reason in errlog,
recorded at once, stored text valid UTF-8 without NUL, long entries cut."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from tests.textcheck import assert_cut, assert_safe_text

UTC = dt.timezone.utc
# From the moment a task acted to its recorded outcome; the tasks' timeout is
# 30 s. A child process may have to be spawned first, and 50 MB of text takes
# a while to build and cut on a busy machine.
LAG_S = 5.0
LAG_CHILD_S = 10.0
LAG_HUGE_S = 15.0
PARK_S = 3600.0
YEAR_9999 = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
TEN_YEARS = dt.timedelta(days=3650)
# A naive datetime means UTC, as everywhere in tasker (two hours from now).
NAIVE_AT = (dt.datetime.now(UTC) + dt.timedelta(hours=2)).replace(tzinfo=None, microsecond=0)


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile task and what its row must say afterwards."""

    name: str
    kind: str
    arg: str = ""
    child: bool = False  # run under isolation = "process"
    park: bool = True  # ctx.exec_after(1 h) first, so a failure is not re-run
    retry: int = 3  # runs it is published with
    status: tuple[str, ...] = ("retry",)  # allowed outcomes
    errlog: tuple[str, ...] = ()  # each must be in errlog
    errlog_any: tuple[str, ...] = ()  # one of them must be in errlog (case-insensitive)
    errlog_not: tuple[str, ...] = ()
    log: tuple[str, ...] = ()  # each must be in log
    cut: tuple[str, float, float] | None = None  # column, least and most cut (bytes/chars)
    exec_after: dt.datetime | None = None  # the row's exec_after, exactly
    exec_after_in: dt.timedelta | None = None  # exec_after minus the outcome's time
    huge: bool = False  # builds 10 or 50 MB of text

    @property
    def lag_s(self) -> float:
        return LAG_HUGE_S if self.huge else LAG_CHILD_S if self.child else LAG_S


def refused(name: str, kind: str, arg: str, *, child: bool = False) -> Case:
    """A delay that must be refused where it is given: the call raises inside
    `exec` and changes nothing, so the run fails with that error and keeps the
    hour asked for before (`park`). Published with three runs, so the writer
    would meet the delay if the call had taken it."""
    return Case(name, kind, arg, child=child, errlog_not=("exec_after accepted", "released"))


CASES: list[Case] = [
    # 3. any BaseException ends the run as a failure naming it
    Case("sys_exit", "sys_exit", errlog=("SystemExit", "3")),
    Case("sys_exit_text", "sys_exit_text", errlog=("SystemExit", "bye caf")),
    Case("sys_exit_none", "sys_exit_none", errlog=("SystemExit",)),
    Case("keyboard_interrupt", "keyboard_interrupt", errlog=("KeyboardInterrupt", "hostile ki")),
    Case("generator_exit", "generator_exit", errlog=("GeneratorExit", "hostile ge")),
    Case("custom_base", "custom_base", errlog=("HostileBase", "hostile base")),
    Case("recursion", "recursion", errlog=("RecursionError",)),
    Case("chained_odd", "chained_odd", errlog=("RuntimeError", "outer")),
    # 4. an exception that cannot be shown
    Case("str_raises", "str_raises", errlog=("StrRaises",)),
    Case("str_and_repr_raise", "str_and_repr_raise", errlog=("StrAndReprRaise",)),
    Case("str_not_text", "str_not_text", errlog=("StrNotText",)),
    Case("weird_class_name", "weird_class_name", errlog=("weird",)),
    # 1, 2. odd text in the error and the log
    Case("nul_message", "nul_message", errlog=("RuntimeError", "nul ", " here")),
    Case("surrogate_message", "surrogate_message", errlog=("RuntimeError", "file caf", ".txt")),
    Case(
        "huge_message",
        "huge_message",
        errlog=("RuntimeError", "mmmm"),
        cut=("errlog", 40e6, 110e6),
        huge=True,
    ),
    Case(
        "odd_log_then_raise",
        "odd_log_then_raise",
        errlog=("RuntimeError", "raised after odd log"),
        log=("caf", " odd"),
    ),
    Case("log_surrogate", "log_surrogate", status=("success",), log=("file caf", ".txt")),
    Case("log_nul", "log_nul", status=("success",), log=("before", "after")),
    Case(
        "log_huge",
        "log_huge",
        status=("success",),
        log=("llll",),
        cut=("log", 9e6, 11e6),
        huge=True,
    ),
    Case("result_odd_text", "result_odd_text", status=("success",)),
    # results that are not JSON: a failure naming the type, one run charged
    Case(
        "result_huge",
        "result_huge",
        errlog_any=("result", "large", "size", "long"),
        huge=True,
    ),
    Case("result_set", "result_set", errlog=("set",)),
    Case("result_object", "result_object", errlog=("object",)),
    Case("result_nan", "result_nan", errlog_any=("nan", "float")),
    Case("result_inf", "result_inf", errlog_any=("inf", "float")),
    Case("result_bytes", "result_bytes", errlog=("bytes",)),
    Case("result_circular", "result_circular", errlog_any=("circular", "dict")),
    Case("result_tuple_key", "result_tuple_key", errlog=("tuple",)),
    Case("result_generator", "result_generator", errlog=("generator",)),
    Case("result_bigint", "result_bigint", status=("retry", "success")),
    # 5. delays: non-finite or out of range refused where given ...
    *(
        refused(f"exec_after_{a}", "exec_after", a)
        for a in ("inf", "-inf", "nan", "1e300", "int1e20", "tdmax", "text")
    ),
    *(refused(f"release_{a}", "release", a) for a in ("nan", "inf", "int1e20")),
    # ... and anything a datetime can hold honoured
    Case(
        "exec_after_year9999",
        "exec_after",
        "year9999",
        park=False,
        errlog=("exec_after accepted",),
        exec_after=YEAR_9999,
    ),
    Case(
        "exec_after_naive",
        "exec_after",
        "naive:" + NAIVE_AT.isoformat(),
        park=False,
        errlog=("exec_after accepted",),
        exec_after=NAIVE_AT.replace(tzinfo=UTC),
    ),
    Case(
        "exec_after_td10y",
        "exec_after",
        "td10y",
        park=False,
        errlog=("exec_after accepted",),
        exec_after_in=TEN_YEARS,
    ),
    Case(
        "release_td10y",
        "release",
        "td10y",
        park=False,
        status=("pending",),
        exec_after_in=TEN_YEARS,
    ),
    Case(
        "release_year9999",
        "release",
        "year9999",
        park=False,
        status=("pending",),
        exec_after=YEAR_9999,
    ),
    # the same under process isolation, and deaths of the child itself
    Case("child_sys_exit", "sys_exit", child=True, errlog=("SystemExit", "3")),
    Case(
        "child_keyboard_interrupt", "keyboard_interrupt", child=True, errlog=("KeyboardInterrupt",)
    ),
    Case("child_str_raises", "str_raises", child=True, errlog=("StrRaises",)),
    Case("child_nul_message", "nul_message", child=True, errlog=("nul ", " here")),
    Case("child_surrogate_message", "surrogate_message", child=True, errlog=("file caf",)),
    Case(
        "child_huge_message",
        "huge_message",
        child=True,
        errlog=("RuntimeError",),
        cut=("errlog", 40e6, 110e6),
        huge=True,
    ),
    Case(
        "child_log_surrogate", "log_surrogate", child=True, status=("success",), log=("file caf",)
    ),
    Case("child_result_set", "result_set", child=True, errlog=("set",)),
    refused("child_exec_after_inf", "exec_after", "inf", child=True),
    refused("child_release_nan", "release", "nan", child=True),
    Case("child_os_exit", "os_exit", child=True, park=False, retry=1, status=("failed",)),
    Case("child_self_kill", "self_kill", child=True, park=False, retry=1, status=("failed",)),
]


# --- checks ---------------------------------------------------------------------


def assert_outcome(case: Case, row: Any, acted_at: dt.datetime, runs: int) -> None:
    """The row of one hostile task, read once its outcome is recorded."""
    label = f"{case.name}: "
    assert row is not None, label + "no row"
    assert row.status in case.status, (
        label + f"status {row.status!r} (expected {'/'.join(case.status)}); "
        f"attempts {row.attempts}; errlog {str(row.errlog)[:300]!r}"
    )
    assert row.attempts == 1 and runs == 1, label + f"ran {runs} times, attempts {row.attempts}"
    charged = row.status in ("retry", "failed")
    assert row.retry == case.retry - (1 if charged else 0), (
        label + f"retry {row.retry} after publishing with {case.retry}: runs charged wrongly"
    )
    for column in ("log", "errlog", "result"):
        assert_safe_text(getattr(row, column), label + column)
    errlog = row.errlog or ""
    if charged:
        assert errlog.count("[attempt ") == 1, label + f"not one errlog entry: {errlog[:500]!r}"
        assert "timeout" not in errlog.lower(), label + f"recorded as a timeout: {errlog[:300]!r}"
    else:
        assert errlog == "", label + f"errlog on {row.status}: {errlog[:300]!r}"
    for needle in case.errlog:
        assert needle in errlog, label + f"{needle!r} not in errlog {errlog[:500]!r}"
    if case.errlog_any:
        assert any(n in errlog.lower() for n in case.errlog_any), (
            label + f"none of {case.errlog_any} in errlog {errlog[:500]!r}"
        )
    for needle in case.errlog_not:
        assert needle not in errlog, label + f"{needle!r} in errlog: the call was not refused"
    for needle in case.log:
        assert needle in (row.log or ""), label + f"{needle!r} not in log {str(row.log)[:300]!r}"
    if case.cut:
        column, least, most = case.cut
        assert_cut(getattr(row, column) or "", least, most, label + column)
    if row.status == "success" and case.kind == "result_odd_text":
        _assert_odd_result(row.result, label)
    recorded = row.finished if row.finished is not None else row.updated
    lag = (recorded - max(row.started, acted_at)).total_seconds()
    assert lag <= case.lag_s, label + f"outcome recorded {lag:.1f}s after the task acted"
    if case.exec_after is not None:
        assert row.exec_after == case.exec_after, label + f"exec_after {row.exec_after}"
    if case.exec_after_in is not None:
        off = (row.exec_after - recorded) - case.exec_after_in
        assert abs(off.total_seconds()) < 10, label + f"exec_after {row.exec_after}"
    if row.status == "retry" and case.park:
        ahead = (row.exec_after - recorded).total_seconds()
        assert ahead > PARK_S - 600, (
            label + f"ctx.exec_after({PARK_S:g}) not honoured: next run in {ahead:.0f}s"
        )


def _assert_odd_result(result: str | None, label: str) -> None:
    import json

    value = json.loads(result or "null")
    assert isinstance(value, dict), label + f"result {result!r}"
    assert value.get("ok") == "plain ✓", label + f"ordinary text changed: {result!r}"
    nul, sur = str(value.get("nul")), str(value.get("sur"))
    assert nul.startswith("a") and nul.endswith("b"), label + f"result {result!r}"
    assert sur.startswith("caf"), label + f"result {result!r}"
