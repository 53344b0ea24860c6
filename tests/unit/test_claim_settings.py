"""Pure parts of issue 15: rate and global-concurrency settings, the window
arithmetic, how many a sweep may claim, priorities and unique keys as input."""

from __future__ import annotations

import datetime as dt

import pytest

from tasker import ConfigurationError, Context, DuplicateTask, MsgQ, unique
from tasker.limits import (
    Limits,
    Rate,
    check_global_concurrency,
    claim_limit,
    limits_of,
    parse_rate,
)

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/s", Rate(100, 1)), ("20/m", Rate(20, 60)), (" 500 / h ", Rate(500, 3600)),
     ("1/s", Rate(1, 1)), ("1000000000/h", Rate(10**9, 3600))],
)  # fmt: skip
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize(
    "bad",
    ["", "100", "100/d", "0/s", "-1/s", "1.5/s", "100/sec", "1e3/s", "\u0661\u0660/s", "5/s\x00",
     "99999999999/s", "1000000001/s", 100, 1.5, b"1/s", ["1/s"], True],
)  # fmt: skip
def test_parse_rate_refuses(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        parse_rate(bad)


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "3", 10**7, float("inf")])
def test_global_concurrency_refuses(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="global_concurrency"):
        check_global_concurrency(bad)
    assert check_global_concurrency(None) is None
    assert check_global_concurrency(3) == 3


def test_class_definition_checks_the_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"Bad\.rate_limit"):
        type("Bad", (MsgQ,), {"topic": "b", "rate_limit": "10 per second"})
    with pytest.raises(ConfigurationError, match=r"Bad\.global_concurrency"):
        type("Bad", (MsgQ,), {"topic": "b", "global_concurrency": 0})
    with pytest.raises(ConfigurationError, match=r"Bad\.priority"):
        type("Bad", (MsgQ,), {"topic": "b", "priority": "high"})
    with pytest.raises(ConfigurationError, match=r"Bad\.priority"):
        type("Bad", (MsgQ,), {"topic": "b", "priority": 2**31})

    class Fine(MsgQ):
        topic = "fine"
        priority = -5
        global_concurrency = 2
        rate_limit = "20/m"

        def exec(self, ctx: Context, worker_id: int) -> object:
            return None

    assert limits_of(Fine) == Limits(2, Rate(20, 60))
    assert not limits_of(MsgQ).any


def test_claim_limit() -> None:
    none = Limits()
    assert claim_limit(10, 4, none, None) == 10
    assert claim_limit(10, 4, Limits(global_concurrency=6), None) == 2
    assert claim_limit(10, 7, Limits(global_concurrency=6), None) == 0  # never negative
    assert claim_limit(10, 0, Limits(rate=Rate(3, 1)), 3) == 3
    assert claim_limit(10, 0, Limits(global_concurrency=5, rate=Rate(3, 1)), 1) == 1
    assert claim_limit(2, 0, Limits(global_concurrency=5, rate=Rate(3, 1)), 3) == 2
    assert claim_limit(-3, 0, none, None) == 0


@pytest.mark.parametrize(
    ("key", "why"),
    [("", "empty"), ("k" * 256, "256 characters"), ("a\x00b", "NUL"), ("\ud800", "surrogate"),
     (5, "text"), (b"k", "text"), ("a\x1b[2Jb", "control character U\\+001B"),
     ("\u202eevil", "bidi control character U\\+202E"), ("a\u2067b", "U\\+2067"),
     ("line\nbreak", "U\\+000A"), ("\x9b", "U\\+009B")],
)  # fmt: skip
def test_unique_key_refused(key: object, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        unique.check_key(key)
    assert unique.check_key("k" * 255 + "") == "k" * 255
    assert unique.check_key("ключ 🔑") == "ключ 🔑"


def test_attach_keys() -> None:
    rows = [{"topic": "t"}, {"topic": "t"}, {"topic": "u"}]
    unique.attach(rows, ["a", None, "a"], "return")
    assert [r.get("unique_key") for r in rows] == ["a", None, "a"]
    with pytest.raises(ConfigurationError, match="one each"):
        unique.attach([{"topic": "t"}], ["a", "b"], "return")
    with pytest.raises(ConfigurationError, match="per message"):
        unique.attach([{"topic": "t"}], "a", "return")
    with pytest.raises(ConfigurationError, match="on_conflict"):
        unique.attach([{"topic": "t"}], None, "ignore")
    with pytest.raises(DuplicateTask, match="twice"):
        unique.attach([{"topic": "t"}, {"topic": "t"}], ["a", "a"], "raise")


def test_periodic_tasks_carry_the_class_priority() -> None:
    from tasker.runtime.periodic import periodic_row

    class Nightly(MsgQ):
        topic = "nightly"
        periodic = "0 3 * * *"
        priority = 4

        def exec(self, ctx: Context, worker_id: int) -> object:
            return None

    at = dt.datetime(2026, 11, 30, 3, tzinfo=UTC)
    assert periodic_row(Nightly, at)["priority"] == 4
