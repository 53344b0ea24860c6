"""Cluster-wide limits of a topic, and the pure decisions the master takes with them.

`global_concurrency` caps executions of a topic across every instance;
`rate_limit` ("100/s", "20/m", "500/h") caps starts per window across the
cluster. The master enforces both when it claims (DESIGN 7), so adding
instances never breaks them. A start is counted when the task is claimed
(the claim is the start decision), by the database clock, as a sliding
limit: no window of the limit's length, wherever it begins, sees more than
its count (GCRA, `rate_allowance`). Its one piece of state, the theoretical
arrival time, is kept in `topic.rate_tat` so a change of master does not
reset it. (The older `rate_window`/`rate_count` columns of calendar windows
are no longer read or written: during a rolling deploy an old master may
still write them, harmlessly.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import string
from typing import Any

from tasker import topics, when
from tasker.exceptions import ConfigurationError, InvalidTime

WINDOW_S = {"s": 1, "m": 60, "h": 3600}
MAX_RATE = 1_000_000_000
MAX_GLOBAL_CONCURRENCY = 1_000_000
_RATE = re.compile(r"\s*(\d{1,10})\s*/\s*([smh])\s*", re.ASCII)


@dataclasses.dataclass(frozen=True)
class Rate:
    """At most `count` starts in any window of `window_s` seconds."""

    count: int
    window_s: int

    def __str__(self) -> str:
        unit = next(u for u, s in WINDOW_S.items() if s == self.window_s)
        return f"{self.count}/{unit}"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the master must respect when it claims tasks of one topic."""

    global_concurrency: int | None = None
    rate: Rate | None = None

    @property
    def any(self) -> bool:
        return self.global_concurrency is not None or self.rate is not None


def parse_rate(value: Any, *, where: str = "rate_limit") -> Rate | None:
    """`"100/s"`, `"20/m"` or `"500/h"` (count >= 1, up to 10**9) as a `Rate`;
    None stays None. ConfigurationError naming `where` for anything else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{where} must be text like '100/s', '20/m' or '500/h', not {type(value).__name__}"
        )
    m = _RATE.fullmatch(value)
    if m is None:
        raise ConfigurationError(
            f"{where} must look like '100/s', '20/m' or '500/h' (starts per second, "
            f"minute or hour), not {value[:50]!r}"
        )
    count = int(m.group(1))
    if not 1 <= count <= MAX_RATE:
        raise ConfigurationError(f"{where}: the count must be 1 to {MAX_RATE}, not {count}")
    return Rate(count, WINDOW_S[m.group(2)])


def check_global_concurrency(value: Any, *, where: str = "global_concurrency") -> int | None:
    """None, or an int from 1 to 10**6; ConfigurationError naming `where` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{where} must be an int >= 1 or None, not {value!r}")
    if not 1 <= value <= MAX_GLOBAL_CONCURRENCY:
        raise ConfigurationError(f"{where} must be 1 to {MAX_GLOBAL_CONCURRENCY}, not {value}")
    return value


def limits_of(cls: Any) -> Limits:
    """The checked limits of a MsgQ class."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    return Limits(
        global_concurrency=check_global_concurrency(
            getattr(cls, "global_concurrency", None), where=f"{where}.global_concurrency"
        ),
        rate=parse_rate(getattr(cls, "rate_limit", None), where=f"{where}.rate_limit"),
    )


RATE_SLACK = 0.02
"""The burst tolerance of a rate limit, as a share of its window (see `rate_allowance`)."""

_US = dt.timedelta(microseconds=1)


def emission_us(rate: Rate) -> int:
    """The spacing of starts (µs) at a steady rate: window x (1 + RATE_SLACK) / count,
    rounded up, so `count` intervals cover the window plus the tolerance."""
    window_us = rate.window_s * 1_000_000
    return max(1, -(-(window_us + tolerance_us(rate)) // rate.count))


def tolerance_us(rate: Rate) -> int:
    """How far ahead of the clock a batch may reach (µs): RATE_SLACK of the window."""
    return int(rate.window_s * 1_000_000 * RATE_SLACK)


@dataclasses.dataclass(frozen=True)
class Allowance:
    """What a rate limit allows at one moment (GCRA state and its answer)."""

    free: int  # claims allowed now
    base: dt.datetime  # max(stored TAT, now): where the new claims' schedule begins
    interval: dt.timedelta  # the emission interval
    tolerance: dt.timedelta

    def tat_after(self, claimed: int) -> dt.datetime:
        """The theoretical arrival time to store after `claimed` claims (whole
        µs, which both databases keep exactly)."""
        return self.base + self.interval * claimed

    def next_at(self, claimed: int) -> dt.datetime:
        """When (database clock) the next claim is allowed, after `claimed` now."""
        return self.tat_after(claimed) - self.tolerance


def rate_allowance(rate: Rate, *, tat: dt.datetime | None, now: dt.datetime) -> Allowance:
    """How many starts the topic's rate limit allows at `now` (database clock),
    given the stored theoretical arrival time `tat` (None: never claimed).

    GCRA (generic cell rate algorithm) with emission interval T = `emission_us`
    and tolerance tau = `tolerance_us`: the j-th claim of a batch takes the
    virtual time max(tat, now) + j*T, and may claim only while that time is at
    most tau ahead of `now`. Virtual times are T apart and a claim happens at
    most tau before its virtual time and never after it, so any `count`
    consecutive claims span at least count*T - tau = window: no window of
    `window_s` seconds, wherever it begins, sees more than `count` starts.
    The price of exactness with one stored time: the steady rate is `count`
    per window x (1 + RATE_SLACK), starts spread evenly rather than in a burst
    of `count` (a burst would need the times of the last `count` starts).
    A `tat` ahead of `now` (the clock went back) is kept: never more starts.
    """
    interval = _US * emission_us(rate)
    tolerance = _US * tolerance_us(rate)
    base = now if tat is None or tat < now else tat
    reach = (now + tolerance - base) // _US  # µs from base the batch may reach
    free = 0 if reach < 0 else min(rate.count, reach // emission_us(rate) + 1)
    return Allowance(free, base, interval, tolerance)


def claim_limit(free_capacity: int, inflight: int, limits: Limits, allowance: int | None) -> int:
    """How many tasks one sweep may claim: the free capacity of the live
    consumers, capped by what `global_concurrency` leaves beside the tasks
    in flight (running, or dispatched and not yet finished), and by the
    rate limit's `allowance` (None when the topic has no rate limit)."""
    n = free_capacity
    if limits.global_concurrency is not None:
        n = min(n, limits.global_concurrency - inflight)
    if allowance is not None:
        n = min(n, allowance)
    return max(0, n)


# --- expiry and per-key locks: what a publish writes (DESIGN 1) ------------------

MAX_LOCK_CHARS = topics.MAX_KEY_CHARS
"""The width of the `lock_key` column."""


def lock_fields(template: Any, *, where: str = "lock") -> set[str]:
    """The payload fields a class's `lock` template names (`"customer:{customer_id}"`).

    ConfigurationError naming `where` for a template that is not text, does
    not parse as a `str.format` string, or uses a positional field (`{}`).
    """
    if not isinstance(template, str) or not template:
        raise ConfigurationError(f"{where} must be non-empty text, not {template!r}"[:300])
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(f"{where} {template[:60]!r} is no format string: {exc}") from None
    names = set()
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ConfigurationError(f"{where} {template[:60]!r}: name a payload field in {{}}")
        names.add(root)
    return names


def check_lock_key(value: Any, *, where: str = "lock") -> str:
    """A lock key: non-empty text of at most 255 characters with no control
    character, lone surrogate or bidi control (`topics.key_problem`: a key is
    compared, never escaped). ConfigurationError naming `where` otherwise."""
    problem = topics.key_problem(value)
    if problem is not None:
        raise ConfigurationError(f"{where} {problem}")
    return str(value)


def format_lock(template: str, fields: dict[str, Any], *, where: str = "lock") -> str:
    """The lock key of one message: `template` formatted over its payload `fields`
    (procrastinate's `lock`, built from the task's arguments). ConfigurationError
    naming the field when one is missing or the result is no key."""
    try:
        key = template.format_map(fields)
    except KeyError as exc:
        raise ConfigurationError(
            f"{where} {template[:60]!r} names {exc}, which is no payload field"
        ) from None
    except (AttributeError, IndexError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{where} {template[:60]!r} does not format: {exc}") from None
    return check_lock_key(key, where=where)


MAX_EXPIRES_S = 10 * 365 * 86400.0
"""The longest `expires` a class may set (ten years); `publish(expires=...)`
takes any time a datetime can hold."""


def check_expires(value: Any, *, where: str = "expires") -> float | None:
    """A class's `expires`: None, or seconds > 0 up to ten years. ConfigurationError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{where} must be seconds > 0 or None, not {value!r}"[:300])
    if not 0 < value <= MAX_EXPIRES_S:  # NaN fails this too; a huge int compares fine
        raise ConfigurationError(f"{where} must be seconds > 0 and at most {MAX_EXPIRES_S:g}")
    return float(value)


def publish_extras(
    cls: Any, fields: Any, expires: Any = None, lock: Any = None
) -> dict[str, Any]:
    """The expiry and lock columns of one new row, only those it uses (a plain
    task gets `{}` and its insert is unchanged).

    `expires` (publish's, else the class's): seconds or a timedelta from the
    database clock at insert, or an aware/naive-UTC datetime, as `when.plan`
    reads it; a relative one must be > 0. `lock` (publish's key, else the
    class's template formatted over `fields()`, a callable giving the
    payload dict, called only then). Raises ConfigurationError or InvalidTime.
    """
    out: dict[str, Any] = {}
    expires = expires if expires is not None else getattr(cls, "expires", None)
    if expires is not None:
        at, delay_ms = when.plan(expires, what="expires")
        if at is not None:
            out["expires_at"] = at
        elif delay_ms <= 0:
            raise InvalidTime(f"expires must be a delay > 0 or a datetime, not {expires!r}")
        else:
            out["expires_s"] = delay_ms / 1000
    if lock is not None:
        out["lock_key"] = check_lock_key(lock)
    else:
        template = getattr(cls, "lock", None)
        if template is not None:
            out["lock_key"] = format_lock(template, fields(), where=f"{cls.__qualname__}.lock")
    return out
