"""The task state machine of DESIGN section 3, as data.

Every status change in tasker is built by `store` from this table: a
transition that is not listed here raises `IllegalTransition` before any SQL
is sent, and the UPDATE it becomes is guarded by the from-statuses, so a
stale or duplicate message can never move a row twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tasker.exceptions import IllegalTransition


class Status(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    RETRY = "retry"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({Status.SUCCESS, Status.FAILED})
DUE = frozenset({Status.PENDING, Status.RETRY})


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[Status]
    target: Status


def _t(name: str, sources: set[Status], target: Status) -> Transition:
    return Transition(name, frozenset(sources), target)


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("start", {Status.PENDING, Status.RETRY}, Status.RUNNING),
        _t("succeed", {Status.RUNNING}, Status.SUCCESS),
        _t("retry", {Status.RUNNING}, Status.RETRY),
        _t("fail", {Status.RUNNING}, Status.FAILED),
        _t("hand_back", {Status.RUNNING}, Status.PENDING),
        _t("requeue", {Status.FAILED, Status.SUCCESS}, Status.PENDING),
        _t("cancel", {Status.PENDING, Status.RETRY}, Status.FAILED),
        _t("expire", {Status.PENDING, Status.RETRY}, Status.FAILED),
    )
}


def transition(name: str) -> Transition:
    """Look a transition up by name; unknown names are illegal."""
    try:
        return TRANSITIONS[name]
    except KeyError:
        raise IllegalTransition(f"no transition named {name!r}") from None


def check(source: Status | str, target: Status | str) -> Transition:
    """The transition from `source` to `target`, or `IllegalTransition`."""
    source, target = Status(source), Status(target)
    for t in TRANSITIONS.values():
        if source in t.sources and t.target == target:
            return t
    raise IllegalTransition(f"a task cannot go from {source} to {target}")


def failure_target(retry_left: int) -> Status:
    """Where a failed execution goes: it takes one run; at 0 the task fails."""
    return Status.RETRY if retry_left - 1 > 0 else Status.FAILED
