"""The one way tests wait: poll a condition with a deadline, never sleep to wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", every: float = 0.02
) -> Any:
    """Poll `cond` until it returns something truthy and return that; fail
    naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def stays(cond: Callable[[], Any], seconds: float, what: str, every: float = 0.05) -> None:
    """Check `cond` again and again for `seconds`: it must hold every time
    (for what must not happen, e.g. a paused topic's task starting)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond(), what
        time.sleep(every)
