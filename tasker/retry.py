"""Back-off between runs (pure: randomness is passed in)."""

from __future__ import annotations

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
