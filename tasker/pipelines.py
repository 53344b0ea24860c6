"""Chains and groups as rows: checks what `Tasker.chain` and `Tasker.group`
are given, and turns it into what `store.task_insert_chain` and
`store.task_insert_group` write (pure; DESIGN 7).

A chain's later steps are named by topic (or by MsgQ class): their input is
the previous step's result, so an instance would be meaningless there and
is refused. A topic must be registered in the app when `chain()` is
called: its class gives the step's timeout, retry and result topic, and a
typo is refused at once (`UnknownTopic`) instead of leaving a chain
waiting for ever on a topic nobody consumes. Register the worker's classes
in the publishing app (`app.register`) to chain them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from tasker.exceptions import ConfigurationError, PayloadError
from tasker.msgq import MsgQ, Registry

RESULTS_FIELD = "results"
"""The callback field that receives the members' outcomes."""


def step_spec(cls: type[MsgQ]) -> dict[str, Any]:
    """What a later chain step keeps of its class: {"topic", "timeout_s",
    "retry", "result_topic", "priority"} (stored in the previous row's
    `chain_next`)."""
    return {
        "topic": cls.topic,
        "timeout_s": cls.timeout,
        "retry": cls.retry,
        "result_topic": cls.result_topic,
        "priority": cls.priority,
    }


def chain_steps(registry: Registry, steps: Sequence[object]) -> tuple[MsgQ, list[dict[str, Any]]]:
    """The first step (a MsgQ instance) and the specs of the later ones.

    Raises PayloadError for a malformed list, UnknownTopic for a topic not
    registered in the app, DuplicateTopic for a class whose topic another
    class holds.
    """
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise PayloadError("chain takes a non-empty list of steps")
    first, *later = steps
    if not isinstance(first, MsgQ):
        raise PayloadError(
            f"chain step 1 must be a MsgQ instance (it has no previous result), "
            f"not {type(first).__name__}"
        )
    specs = []
    for i, step in enumerate(later, start=2):
        if isinstance(step, MsgQ):
            raise PayloadError(
                f"chain step {i}: give its topic or MsgQ class, not an instance "
                "(its input is the previous step's result)"
            )
        if isinstance(step, type) and issubclass(step, MsgQ):
            if registry.find(step.topic) is not step:
                registry.register(step)
            cls = step
        elif isinstance(step, str):
            cls = registry.get(step)  # UnknownTopic
        else:
            raise PayloadError(
                f"chain step {i} must be a topic or a MsgQ class, not {type(step).__name__}"
            )
        specs.append(step_spec(cls))
    return first, specs


def callback_input(then: object) -> str:
    """The callback's input without `results` (JSON object text), checked.

    Raises PayloadError when `then` is not a MsgQ instance, ConfigurationError
    when its class has no `results` field to receive the members' outcomes.
    """
    if not isinstance(then, MsgQ):
        raise PayloadError(f"group(then=...) takes a MsgQ instance, not {type(then).__name__}")
    names = {f.name for f in dataclasses.fields(then)}
    if RESULTS_FIELD not in names:
        raise ConfigurationError(
            f"{type(then).__qualname__} ({then.topic}) needs a field `results: list` "
            "to receive the members' outcomes"
        )
    payload = json.loads(then.encode())
    payload.pop(RESULTS_FIELD, None)
    return json.dumps(payload, separators=(",", ":"))
