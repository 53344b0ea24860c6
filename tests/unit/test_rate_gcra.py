"""The rate limit as a sliding limit (GCRA, `limits.rate_allowance`): what one
claim may take, the state it leaves, and the property users read in "5/s":
no window of the limit's length, wherever it begins, sees more starts."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from tasker.limits import RATE_SLACK, Rate, emission_us, rate_allowance

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
US = dt.timedelta(microseconds=1)


def test_a_fresh_limit_allows_what_the_tolerance_reaches() -> None:
    # 5/s: starts 204 ms apart, a batch may reach 20 ms ahead: one now.
    a = rate_allowance(Rate(5, 1), tat=None, now=T0)
    assert a.free == 1 and a.base == T0
    assert a.tat_after(1) == T0 + dt.timedelta(milliseconds=204)
    assert a.next_at(1) == T0 + dt.timedelta(milliseconds=184)
    # 1000/s: 1.02 ms apart, 20 ms of tolerance: a batch of 20.
    assert rate_allowance(Rate(1000, 1), tat=None, now=T0).free == 20


def test_the_stored_time_decides() -> None:
    rate = Rate(5, 1)
    tat = T0 + dt.timedelta(milliseconds=204)
    assert rate_allowance(rate, tat=tat, now=T0).free == 0  # too early
    assert rate_allowance(rate, tat=tat, now=tat - dt.timedelta(milliseconds=20)).free == 1
    assert rate_allowance(rate, tat=tat, now=tat - dt.timedelta(milliseconds=21)).free == 0
    # Long idle gives no burst beyond the tolerance: sliding, not a bucket of 5.
    later = rate_allowance(rate, tat=tat, now=T0 + dt.timedelta(hours=1))
    assert later.free == 1
    # A stored time far ahead (the clock went back) is kept.
    back = rate_allowance(rate, tat=T0 + dt.timedelta(minutes=5), now=T0)
    assert back.free == 0 and back.next_at(0) > T0 + dt.timedelta(minutes=4)


def test_steady_demand_gets_the_rate_less_the_slack() -> None:
    rate = Rate(50, 1)
    tat, now, starts = None, T0, 0
    while now < T0 + dt.timedelta(seconds=10):
        a = rate_allowance(rate, tat=tat, now=now)
        if a.free:
            starts += a.free
            tat = a.tat_after(a.free)
        now += dt.timedelta(milliseconds=3)
    assert 500 / (1 + RATE_SLACK) - 2 <= starts <= 500


def _windows_hold(rate: Rate, starts: list[dt.datetime]) -> None:
    window = dt.timedelta(seconds=rate.window_s)
    starts.sort()
    for i in range(len(starts) - rate.count):
        # starts[i .. i+count] are count+1 starts: they must not fit in one window
        assert starts[i + rate.count] - starts[i] >= window, (i, starts[i], starts[i + rate.count])


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 40),
    window_s=st.sampled_from([1, 60, 3600]),
    claims=st.lists(
        st.tuples(st.floats(0, 2.5), st.integers(1, 60)), min_size=1, max_size=150
    ),
)
def test_no_window_sees_more_than_count_starts(
    count: int, window_s: int, claims: list[tuple[float, int]]
) -> None:
    """Random claim times (gaps as a share of the window, so every limit sees
    bursts and pauses) and batch sizes."""
    rate = Rate(count, window_s)
    tat: dt.datetime | None = None
    now, starts = T0, []
    for gap, wanted in claims:
        now += dt.timedelta(microseconds=int(gap * window_s * 1_000_000 / count))
        a = rate_allowance(rate, tat=tat, now=now)
        n = min(wanted, a.free)
        if n:
            starts += [now] * n
            tat = a.tat_after(n)
            assert a.next_at(n) > now  # the master waits before it claims again
    _windows_hold(rate, starts)


def test_the_interval_times_count_covers_window_and_tolerance() -> None:
    for count in (1, 3, 7, 1000, 10**9):
        for window_s in (1, 60, 3600):
            rate = Rate(count, window_s)
            assert emission_us(rate) * count >= window_s * 1_000_000 * (1 + RATE_SLACK)
