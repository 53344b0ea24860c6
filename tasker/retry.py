"""Back-off between runs (pure: randomness is passed in)."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable

from tasker import defaults

system_random = random.SystemRandom().random
"""Uniform in [0, 1) from the operating system: no shared state to seed or
disturb, unlike the `random` module's functions, which belong to the
application (and to test tools such as Hypothesis)."""


def backoff_s(
    failures: int,
    *,
    base_s: float = defaults.BACKOFF_BASE_S,
    max_s: float = defaults.BACKOFF_MAX_S,
    jitter: float = defaults.BACKOFF_JITTER,
    rand: Callable[[], float] = system_random,
) -> float:
    """Delay before the next run after the `failures`-th failure (1-based).

    base * 2**(failures-1), capped at max, spread by +/- jitter: 1 s, 2 s,
    4 s ... 300 s with the defaults. The default randomness is the
    system's, not the `random` module's shared state, which belongs to the
    application (and to test tools such as Hypothesis that seed it).
    """
    # int ** int is typed Any (a negative exponent makes a float); this one is >= 0.
    exp: float = base_s * (2 ** max(0, min(failures - 1, 30)))
    delay = min(max_s, exp)
    spread = (rand() * 2 - 1) * jitter * delay
    return max(0.0, min(max_s, delay + spread))


Backoff = float | int | Callable[..., float] | None
"""A class's `backoff`: None (exponential with jitter), seconds (fixed), or a
callable `attempt -> seconds`."""

_log = logging.getLogger(__name__)


def policy_backoff_s(
    backoff: Backoff, attempt: int, *, rand: Callable[[], float] = system_random
) -> float:
    """Delay (s) before the run after failed run number `attempt`, by a class's `backoff`.

    None is `backoff_s`; a number is that many seconds every time; a callable
    is asked with `attempt` (Celery's `retry_backoff`, procrastinate's
    `RetryStrategy.wait`). What a callable gives that is no delay (it raises,
    or returns a non-number, NaN, an infinity, a negative or more than
    `MAX_POLICY_BACKOFF_S`) is logged and the default curve used instead:
    a user's bug in a back-off never loses the task. Never raises.
    """
    if backoff is None:
        return backoff_s(attempt, rand=rand)
    if not callable(backoff):
        return float(backoff)  # checked when the class was defined
    try:
        value = backoff(attempt)
        problem = backoff_problem(value)
    except BaseException as exc:  # the user's callable may raise anything
        problem = f"raised {type(exc).__name__}"
    if problem is None:
        return float(value)
    _log.warning(
        "backoff(%d) %s; using the default back-off", attempt, problem,
        extra={"action": "backoff_refused"},
    )  # fmt: skip
    return backoff_s(attempt, rand=rand)


MAX_POLICY_BACKOFF_S = 365 * 86400.0
"""The longest back-off a class may ask for: a year (a longer wait is a
`ctx.exec_after` to an absolute time)."""


def backoff_problem(value: object) -> str | None:
    """Why `value` is no back-off in seconds (None when it is one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"returned {type(value).__name__}, not seconds"
    # The range first: math.isfinite of a huge int raises OverflowError.
    if not 0 <= value <= MAX_POLICY_BACKOFF_S or not math.isfinite(value):
        return f"returned {value!r}, not seconds from 0 to {MAX_POLICY_BACKOFF_S:g}"
    return None
