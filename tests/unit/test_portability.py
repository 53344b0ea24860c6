"""Behaviour that must not depend on the Python version or the host: time
arguments of the CLI, and the host name written into every host field."""

from __future__ import annotations

import datetime as dt

import pytest

from tasker import outcome
from tasker.cli.params import parse_when
from tasker.config import Settings, default_fqdn

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T10:00:00Z", dt.datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00z", dt.datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00.250Z", dt.datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-23T11:00:00+0100", dt.datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T05:00:00-05:00", dt.datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23 10:00", dt.datetime(2026, 11, 23, 10, tzinfo=UTC)),
        (" 2026-11-23 ", dt.datetime(2026, 11, 23, tzinfo=UTC)),
    ],
)
def test_iso_times_parse_on_every_python(text: str, expected: dt.datetime) -> None:
    assert parse_when(text) == expected


@pytest.mark.parametrize("text", ["Z", "2026-11-23TZ", "2026-13-01T00:00Z", "yesterday", "\x00"])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO datetime nor a duration"):
        parse_when(text)


def test_durations_still_mean_ago() -> None:
    assert parse_when("1h30m") == dt.timedelta(hours=1, minutes=30)


def test_tasker_fqdn_names_the_host_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKER_FQDN", "  worker-7.example  ")
    assert default_fqdn() == "worker-7.example"
    assert Settings.load().fqdn == "worker-7.example"
    assert outcome.errlog_entry(1, "boom").startswith("[attempt 1 on worker-7.example at ")
    decision = outcome.failed(retry_left=2, attempt=1, reason="boom")
    assert "on worker-7.example at" in decision.err
    assert outcome.errlog_entry(1, "boom", host="given").startswith("[attempt 1 on given at ")


def test_without_tasker_fqdn_the_host_is_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delenv("TASKER_FQDN", raising=False)
    assert default_fqdn() == socket.getfqdn()
    assert default_fqdn({"TASKER_FQDN": "   "}) == socket.getfqdn()
