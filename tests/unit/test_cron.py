"""Cron arithmetic against a table of crontab lines with known fire times (tasker.cron).

The expected times were worked out by hand from a calendar: 2026-11-30 is a
Monday; Berlin springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST) and
falls back on 2026-10-25 (03:00 CEST -> 02:00 CET); New York springs forward
on 2026-03-08 (02:00 EST -> 03:00 EDT) and falls back on 2026-11-01
(02:00 EDT -> 01:00 EST).
"""

from __future__ import annotations

import datetime as dt

import pytest

from tasker import cron
from tasker.exceptions import ConfigurationError
from tasker.runtime import triggers

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    """An ISO time with its offset (or Z), as aware UTC."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def fires(spec: str, tz: str, after: str, n: int) -> list[dt.datetime]:
    schedule = cron.parse(spec, tz)
    out: list[dt.datetime] = []
    t = at(after)
    for _ in range(n):
        nxt = schedule.next_after(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


TABLE = [
    # weekday 0 and 7 are Sunday; names in either case
    ("0 3 * * 0", "UTC", "2026-11-30T00:00Z", ["2026-12-06T03:00Z", "2026-12-13T03:00Z"]),
    ("0 3 * * 7", "UTC", "2026-11-30T00:00Z", ["2026-12-06T03:00Z", "2026-12-13T03:00Z"]),
    ("0 3 * * SUN", "UTC", "2026-11-30T00:00Z", ["2026-12-06T03:00Z"]),
    ("0 3 * * sun", "UTC", "2026-11-30T00:00Z", ["2026-12-06T03:00Z"]),
    ("0 9 * * 1-5", "UTC", "2026-12-04T10:00Z", ["2026-12-07T09:00Z", "2026-12-08T09:00Z"]),
    ("0 9 * * MON-FRI", "UTC", "2026-12-04T10:00Z", ["2026-12-07T09:00Z"]),
    ("0 9 * * 6,0", "UTC", "2026-11-30T00:00Z", ["2026-12-05T09:00Z", "2026-12-06T09:00Z"]),
    # day-of-month OR weekday when both are restricted; AND when one is `*`
    (
        "0 0 13 * 5",
        "UTC",
        "2026-11-30T00:00Z",
        ["2026-12-04T00:00Z", "2026-12-11T00:00Z", "2026-12-13T00:00Z", "2026-12-18T00:00Z"],
    ),
    ("0 0 13 * *", "UTC", "2026-11-30T00:00Z", ["2026-12-13T00:00Z", "2027-01-13T00:00Z"]),
    ("0 0 */10 * 5", "UTC", "2026-11-30T00:00Z", ["2026-12-11T00:00Z"]),  # `*/10`: AND
    ("0 0 1 JAN *", "UTC", "2026-11-30T00:00Z", ["2027-01-01T00:00Z"]),
    ("0 0 29 2 *", "UTC", "2026-11-30T00:00Z", ["2028-02-29T00:00Z"]),
    ("30 */6 * * *", "UTC", "2026-11-30T00:00Z", ["2026-11-30T00:30Z", "2026-11-30T06:30Z"]),
    # 6 fields: seconds first
    ("15 30 2 * * *", "UTC", "2026-11-30T00:00Z", ["2026-11-30T02:30:15Z"]),
    (
        "*/20 * * * * *",
        "UTC",
        "2026-11-30T00:00:05Z",
        ["2026-11-30T00:00:20Z", "2026-11-30T00:00:40Z"],
    ),
    # macros
    ("@daily", "UTC", "2026-11-30T00:00Z", ["2026-12-01T00:00Z"]),
    ("@weekly", "UTC", "2026-11-30T00:00Z", ["2026-12-06T00:00Z"]),
    ("@hourly", "UTC", "2026-11-30T00:10Z", ["2026-11-30T01:00Z"]),
    # a zone without DST at that date: local midnight
    ("0 0 * * *", "Asia/Tokyo", "2026-11-30T00:00Z", ["2026-11-30T15:00Z"]),
    # Berlin spring forward: 02:30 does not exist; fires at 03:00 CEST, the gap's end
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-27T12:00Z",
        ["2026-03-28T02:30+01:00", "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"],
    ),
    (
        "0,30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00Z",
        ["2026-03-29T03:00+02:00", "2026-03-30T02:00+02:00"],
    ),
    ("45 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00Z", ["2026-03-29T03:00:00+02:00"]),
    # Berlin fall back: 02:30 happens twice; fires once, at the first
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00Z",
        ["2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"],
    ),
    # a wildcard line runs on elapsed time: every hour, twice at 02:00 local
    (
        "0 * * * *",
        "Europe/Berlin",
        "2026-10-24T23:30Z",
        ["2026-10-25T02:00+02:00", "2026-10-25T02:00+01:00", "2026-10-25T03:00+01:00"],
    ),
    (
        "0 * * * *",
        "Europe/Berlin",
        "2026-03-28T23:30Z",
        ["2026-03-29T01:00+01:00", "2026-03-29T03:00+02:00"],
    ),
    # New York spring forward and fall back
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00Z",
        ["2026-03-08T03:00-04:00", "2026-03-09T02:30-04:00"],
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00Z",
        ["2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"],
    ),
    (
        "0 30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00Z",
        ["2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"],
    ),
    (
        "*/30 * * * *",
        "America/New_York",
        "2026-11-01T04:10Z",
        [
            "2026-11-01T00:30-04:00",
            "2026-11-01T01:00-04:00",
            "2026-11-01T01:30-04:00",
            "2026-11-01T01:00-05:00",
            "2026-11-01T01:30-05:00",
            "2026-11-01T02:00-05:00",
        ],
    ),
    ("0 9 * * 0", "America/New_York", "2026-11-30T00:00Z", ["2026-12-06T09:00-05:00"]),
    # Santiago skips midnight; Apia skipped 2011-12-30 whole
    ("0 0 * * *", "America/Santiago", "2026-09-05T12:00Z", ["2026-09-06T01:00-03:00"]),
    (
        "30 12 * * *",
        "Pacific/Apia",
        "2011-12-29T23:00Z",
        ["2011-12-31T00:00+14:00", "2011-12-31T12:30+14:00"],
    ),
]


@pytest.mark.parametrize(("spec", "tz", "after", "expected"), TABLE)
def test_next_fire_times(spec: str, tz: str, after: str, expected: list[str]) -> None:
    got = fires(spec, tz, after, len(expected))
    assert got == [at(e) for e in expected]
    assert all(t.tzinfo is UTC for t in got)
    assert cron.next_fire(spec, tz, at(after)) == got[0]


def test_next_fire_is_strictly_after_and_takes_naive_as_utc() -> None:
    assert cron.next_fire("0 3 * * *", "UTC", at("2026-11-30T03:00Z")) == at("2026-12-01T03:00Z")
    assert cron.next_fire("0 3 * * *", "UTC", dt.datetime(2026, 11, 30, 2, 59, 59, 999999)) == at(
        "2026-11-30T03:00Z"
    )
    assert cron.next_fire("*/1 * * * * *", "UTC", at("2026-11-30T03:00:00.5Z")) == at(
        "2026-11-30T03:00:01Z"
    )


def test_intervals_count_from_the_epoch() -> None:
    assert cron.next_fire(0.5, "UTC", at("2026-11-30T00:00:00.2Z")) == at("2026-11-30T00:00:00.5Z")
    assert cron.next_fire("30", "Europe/Berlin", at("2026-11-30T00:00:30Z")) == at(
        "2026-11-30T00:01Z"
    )
    assert cron.parse(60).latest_at_or_before(at("2026-11-30T00:00:59Z")) == at("2026-11-30T00:00Z")


@pytest.mark.parametrize(
    ("spec", "tz", "when", "expected"),
    [
        ("0 3 * * *", "UTC", "2026-11-30T03:00Z", "2026-11-30T03:00Z"),  # at, inclusive
        ("0 3 * * *", "UTC", "2026-11-30T02:59:59Z", "2026-11-29T03:00Z"),
        ("0 3 * * 0", "UTC", "2026-11-30T12:00Z", "2026-11-29T03:00Z"),
        ("30 2 * * *", "Europe/Berlin", "2026-03-29T01:00Z", "2026-03-29T03:00+02:00"),
        ("30 2 * * *", "Europe/Berlin", "2026-03-29T00:59:59Z", "2026-03-28T02:30+01:00"),
        # 01:10 EST, in the repeated hour: 01:30 EDT (an hour ago) fired already
        ("30 1 * * *", "America/New_York", "2026-11-01T06:10Z", "2026-11-01T01:30-04:00"),
        ("0 * * * *", "Europe/Berlin", "2026-10-25T01:30Z", "2026-10-25T02:00+01:00"),
    ],
)
def test_latest_at_or_before(spec: str, tz: str, when: str, expected: str) -> None:
    assert cron.parse(spec, tz).latest_at_or_before(at(when)) == at(expected)


@pytest.mark.parametrize(
    ("spec", "tz", "message"),
    [
        ("0 3 * * 8", "UTC", "bad day-of-week"),
        ("61 * * * *", "UTC", "bad minute"),
        ("0 24 * * *", "UTC", "bad hour"),
        ("0 0 * 13 *", "UTC", "bad month"),
        ("* * *", "UTC", "has 3 fields"),
        ("1 2 3 4 5 6 7", "UTC", "has 7 fields"),
        ("0 0 30 2 *", "UTC", "day-of-month"),
        ("0 0 * * FOO", "UTC", "bad day-of-week"),
        ("0 0\x00 * * *", "UTC", "not a crontab line"),
        ("* " * 200, "UTC", "not a crontab line"),
        ("", "UTC", "has 0 fields"),
        (0, "UTC", "interval"),
        (-1, "UTC", "interval"),
        (float("nan"), "UTC", "interval"),
        ("inf", "UTC", "interval"),
        (10**9, "UTC", "longer than a year"),
        (True, "UTC", "not a crontab line"),
        (None, "UTC", "not a crontab line"),
        ("0 3 * * *", "Mars/Olympus_Mons", "unknown time zone"),
        ("0 3 * * *", "", "not an IANA time zone"),
        ("0 3 * * *", "/etc/passwd", "unknown time zone"),
        ("0 3 * * *", "Europe/Berlin\x00", "not an IANA time zone"),
        ("0 3 * * *", 1, "not an IANA time zone"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(spec: object, tz: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as err:
        cron.parse(spec, tz, where="app.Nightly.periodic")  # type: ignore[arg-type]
    assert str(err.value).startswith("app.Nightly.periodic")


# --- catch-up ---------------------------------------------------------------------

NIGHTLY = "0 3 * * *"  # 03:00 Berlin = 02:00 UTC in winter


def insert(
    catch_up: str, last: str | None, now: str, spec: str = NIGHTLY, tz: str = "Europe/Berlin"
) -> list[dt.datetime]:
    return cron.plan_fire_times(spec, tz, at(last) if last else None, at(now), catch_up).insert


def test_catch_up_after_a_ten_day_outage() -> None:
    last, now = "2026-11-20T02:00Z", "2026-11-30T12:00Z"
    assert insert("latest", last, now) == [at("2026-11-30T02:00Z")]
    assert insert("all", last, now) == [at(f"2026-11-{d}T02:00Z") for d in range(21, 31)]
    assert insert("none", last, now) == []


@pytest.mark.parametrize("policy", cron.CATCH_UP)
def test_a_fire_time_due_now_is_inserted_whatever_the_policy(policy: str) -> None:
    assert insert(policy, "2026-11-29T02:00Z", "2026-11-30T02:00:05Z") == [at("2026-11-30T02:00Z")]
    assert insert(policy, "2026-11-30T02:00Z", "2026-11-30T02:00:05Z") == []  # already there


def test_a_short_handover_loses_no_second_even_with_none() -> None:
    got = insert("none", "2026-11-30T12:00:00Z", "2026-11-30T12:00:10Z", "*/1 * * * * *", "UTC")
    assert got == [at("2026-11-30T12:00:00Z") + dt.timedelta(seconds=s) for s in range(1, 11)]


def test_a_new_topic_starts_at_its_latest_fire_time_only_when_due() -> None:
    assert insert("all", None, "2026-11-30T02:00:30Z") == [at("2026-11-30T02:00Z")]
    assert insert("all", None, "2026-11-30T12:00Z") == []  # deployed at noon: waits for 03:00


def test_catch_up_all_keeps_the_newest_thousand_oldest_first() -> None:
    got = insert("all", "2026-11-29T12:00Z", "2026-11-30T12:00Z", "*/1 * * * * *", "UTC")
    assert len(got) == cron.CATCH_UP_LIMIT
    assert got == sorted(set(got))
    assert got[-1] == at("2026-11-30T12:00Z")
    assert got[0] == at("2026-11-30T12:00Z") - dt.timedelta(seconds=999)


def test_catch_up_across_a_dst_change() -> None:
    got = insert("all", "2026-03-27T01:30Z", "2026-03-30T12:00Z", "30 2 * * *")
    assert got == [
        at("2026-03-28T02:30+01:00"),
        at("2026-03-29T03:00+02:00"),
        at("2026-03-30T02:30+02:00"),
    ]


def test_catch_up_odd_inputs() -> None:
    future = "2026-12-30T02:00Z"  # a clock ahead of ours wrote it
    assert insert("all", future, "2026-11-30T12:00Z") == []
    naive = dt.datetime(2026, 11, 28, 2, 0)  # SQLite gives naive UTC
    got = cron.plan_fire_times(NIGHTLY, "Europe/Berlin", naive, at("2026-11-30T12:00Z"),
                              "all").insert
    assert got == [at("2026-11-29T02:00Z"), at("2026-11-30T02:00Z")]
    with pytest.raises(ConfigurationError, match="catch_up"):
        insert("sometimes", None, "2026-11-30T12:00Z")


# --- the APScheduler adapter ------------------------------------------------------


def test_trigger_uses_crontab_semantics_and_the_zone() -> None:
    trig = triggers.make_trigger("0 3 * * 0", timezone="Europe/Berlin")
    now = at("2026-11-30T00:00Z")
    first = trig.get_next_fire_time(None, now)
    assert first == at("2026-12-06T03:00+01:00")
    assert trig.get_next_fire_time(first, first) == at("2026-12-13T03:00+01:00")
    assert trig.get_next_fire_time(None, first) == first  # at `now` counts (APScheduler's rule)
    assert triggers.fire_times(trig, now, at("2026-12-31T00:00Z")) == [
        at(f"2026-12-{d:02d}T03:00+01:00") for d in (6, 13, 20, 27)
    ]
    half = triggers.make_trigger(0.5)
    assert half.get_next_fire_time(None, at("2026-11-30T00:00:00.1Z")) == at(
        "2026-11-30T00:00:00.5Z"
    )


@pytest.mark.parametrize(
    ("tz", "start"),
    [
        ("Europe/Berlin", "2026-03-27T00:00Z"),
        ("Europe/Berlin", "2026-10-23T00:00Z"),
        ("America/New_York", "2026-10-30T00:00Z"),
        ("Australia/Lord_Howe", "2026-04-03T00:00Z"),  # a 30-minute change
        ("America/Santiago", "2026-09-04T00:00Z"),  # midnight is skipped
        ("Pacific/Apia", "2011-12-28T00:00Z"),  # 2011-12-30 was skipped whole
    ],
)
@pytest.mark.parametrize(
    "spec", ["30 2 * * *", "0 0 * * *", "15 1,2,3 * * *", "*/30 * * * *", "0 * * * *", "@daily"]
)
def test_forward_and_backward_agree_across_dst(tz: str, spec: str, start: str) -> None:
    schedule = cron.parse(spec, tz)
    t = at(start)
    seen = []
    while t < at(start) + dt.timedelta(days=4):
        nxt = schedule.next_after(t)
        assert nxt is not None and nxt > t
        assert schedule.latest_at_or_before(nxt) == nxt
        assert schedule.latest_at_or_before(nxt - dt.timedelta(microseconds=1)) == (
            seen[-1] if seen else schedule.latest_at_or_before(at(start))
        )
        seen.append(nxt)
        t = nxt
    assert len(seen) == len(set(seen))
    if not spec.startswith(("*", "0 *")):  # fixed-time lines: each wall time fires once
        walls = [s.astimezone(schedule.tz).replace(tzinfo=None) for s in seen]  # type: ignore[attr-defined]
        assert len(walls) == len(set(walls))


# --- catch-up after a gap, and what the master remembers (issue 21) -----------------

EVERY20 = "*/20 * * * * *"


def plan(catch_up: str, last: str | None, now: str, spec: str = EVERY20) -> cron.FirePlan:
    tz = "Europe/Berlin" if spec == NIGHTLY else "UTC"
    return cron.plan_fire_times(spec, tz, at(last) if last else None, at(now), catch_up)


def test_latest_after_a_five_minute_gap_inserts_exactly_the_newest() -> None:
    got = plan("latest", "2026-12-04T12:00:00Z", "2026-12-04T12:05:03Z")
    assert got == cron.FirePlan([at("2026-12-04T12:05:00Z")], at("2026-12-04T12:05:00Z"))


def test_latest_inserts_one_row_whatever_the_gap() -> None:
    for gap in ("2026-12-04T12:02:05Z", "2026-12-04T13:00:00Z", "2027-12-04T12:00:00Z"):
        got = plan("latest", "2026-12-04T12:00:00Z", gap)
        assert len(got.insert) == 1 and got.insert == [got.remember]


def test_all_after_a_gap_inserts_every_one_oldest_first_none_none() -> None:
    got = plan("all", "2026-12-04T12:00:00Z", "2026-12-04T12:05:03Z")
    assert got.insert == [at("2026-12-04T12:00:00Z") + dt.timedelta(seconds=20 * k)
                          for k in range(1, 16)]  # fmt: skip
    skipped = plan("none", "2026-11-20T02:00Z", "2026-11-30T12:00Z", NIGHTLY)
    assert skipped == cron.FirePlan([], at("2026-11-30T02:00Z"))  # decided once, remembered


def test_none_after_a_gap_still_inserts_a_fire_time_due_now() -> None:
    got = plan("none", "2026-12-04T12:00:00Z", "2026-12-04T12:05:03Z")
    assert got.insert == [at("2026-12-04T12:05:00Z")]


def test_the_remembered_fire_time_never_goes_back() -> None:
    assert plan("all", "2026-12-04T12:10:00Z", "2026-12-04T12:05:03Z") == cron.FirePlan(
        [], at("2026-12-04T12:10:00Z")
    )
    assert plan("all", None, "2026-11-30T12:00Z", NIGHTLY) == cron.FirePlan(
        [], at("2026-11-30T02:00Z")
    )  # a new topic deployed at noon: nothing due, last night remembered
