"""The pure decisions: back-off, failure outcome, triggers, settings."""

from __future__ import annotations

import datetime as dt

import pytest

from tasker import outcome, retry
from tasker.config import Settings
from tasker.exceptions import ConfigurationError
from tasker.runtime import triggers


def test_backoff_doubles_and_caps() -> None:
    mid = lambda: 0.5  # noqa: E731 - no jitter at the midpoint
    assert [retry.backoff_s(n, rand=mid) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry.backoff_s(30, rand=mid) == 300.0
    assert 0.8 <= retry.backoff_s(1, rand=lambda: 0.0) <= 1.2


def test_failure_decisions() -> None:
    d = outcome.failed(retry_left=3, attempt=1, reason="boom", rand=lambda: 0.5, host="h")
    assert (d.transition, d.take, d.delay_s) == ("retry", 1, 1.0)
    assert d.err.startswith("[attempt 1 on h at ") and "boom" in d.err
    last = outcome.failed(retry_left=1, attempt=3, reason="boom")
    assert (last.transition, last.take) == ("fail", 1)
    at = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    chosen = outcome.failed(retry_left=2, attempt=1, reason="x", next_at=at)
    assert chosen.at == at
    bad = outcome.bad_input(attempt=1, problem="missing field 'x'")
    assert (bad.transition, bad.take) == ("fail", 0)
    assert outcome.released(next_at=None, next_delay_s=5).delay_s == 5


def test_result_must_be_json() -> None:
    assert outcome.succeeded({"a": 1}).result == '{"a": 1}'
    with pytest.raises(TypeError):
        outcome.succeeded(object())


def test_traceback_head_is_bounded() -> None:
    text = outcome.errlog_entry(2, "err", "\n".join(f"line {i}" for i in range(100)), host="h")
    assert "line 0" in text and "line 99" not in text and "more)" in text


def test_cron_with_seconds_and_intervals() -> None:
    t = triggers.make_trigger("*/10 * * * * *")
    since = dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    until = since + dt.timedelta(seconds=30)
    assert [x.second for x in triggers.fire_times(t, since, until)] == [10, 20, 30]
    assert triggers.make_trigger(0.5).interval == dt.timedelta(seconds=0.5)
    with pytest.raises(ConfigurationError):
        triggers.make_trigger("* * *")
    with pytest.raises(ConfigurationError):
        triggers.make_trigger(0)


def test_settings_env_and_overrides() -> None:
    s = Settings.load(env={"TASKER_JUST_WORKER": "1", "TASKER_PREFETCH": "3"})
    assert s.just_worker is True and s.prefetch == 3
    assert Settings.load(env={"TASKER_PREFETCH": "3"}, prefetch=5).prefetch == 5
    assert Settings.load(env={}).database_url.startswith("sqlite:///")
    with pytest.raises(ConfigurationError, match="TASKER_PREFETCH"):
        Settings.load(env={"TASKER_PREFETCH": "lots"})
    with pytest.raises(ConfigurationError, match="unknown setting"):
        Settings.load(env={}, colour="blue")
