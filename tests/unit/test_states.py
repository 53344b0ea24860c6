from __future__ import annotations

import pytest

from tasker import states
from tasker.exceptions import IllegalTransition
from tasker.states import Status
from tasker.store import finish

LEGAL = [
    ("pending", "running"),
    ("retry", "running"),
    ("running", "success"),
    ("running", "retry"),
    ("running", "failed"),
    ("running", "pending"),
    ("failed", "pending"),
    ("success", "pending"),
    ("pending", "failed"),
    ("retry", "failed"),
]


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_design_table_is_legal(source: str, target: str) -> None:
    assert states.check(source, target).target == Status(target)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("pending", "success"),
        ("success", "running"),
        ("failed", "running"),
        ("running", "running"),
        ("success", "failed"),
        ("retry", "success"),
        ("failed", "retry"),
    ],
)
def test_other_moves_are_illegal(source: str, target: str) -> None:
    with pytest.raises(IllegalTransition):
        states.check(source, target)


def test_table_matches_design_exactly() -> None:
    pairs = {(s.value, t.target.value) for t in states.TRANSITIONS.values() for s in t.sources}
    assert pairs == set(LEGAL)


def test_unknown_transition_name_is_an_error() -> None:
    with pytest.raises(IllegalTransition):
        states.transition("teleport")


def test_finish_statements_only_leave_running() -> None:
    for dialect in ("postgresql", "sqlite"):
        for name in finish._FINISH_STATEMENTS[dialect]:
            assert states.transition(name).sources == {Status.RUNNING}
    with pytest.raises(IllegalTransition):
        finish._finish_executemany("cancel")


@pytest.mark.parametrize(("left", "target"), [(3, "retry"), (2, "retry"), (1, "failed")])
def test_failure_takes_one_run(left: int, target: str) -> None:
    assert states.failure_target(left) == Status(target)
