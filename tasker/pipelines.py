"""Chains and groups as rows: checks what `Tasker.chain` and `Tasker.group`
are given, and turns it into what `store.task_insert_chain` and
`store.task_insert_group` write (pure; DESIGN 7).

A chain's later steps are named by topic (or by MsgQ class): their input is
the previous step's result, so an instance would be meaningless there and
is refused. A step's settings (timeout, retry, priority, result topic,
expires, lock) come from its class where this app registered it, else from
what the instances serving the topic declared in the `topic` table
(`declaration`), else the defaults: a distributor that holds none of the
worker code can chain by topic names. A topic nobody declared gets the
defaults and a warning in the log (a typo waits for a consumer that never
comes). A later step's `expires` counts from when its row is written (when
the step before it succeeds), and its `lock` template is formatted over its
input, the previous result, as a direct publish formats it over the
payload. A group's callback takes its class's settings the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tasker import defaults, limits, topics
from tasker.exceptions import ConfigurationError, PayloadError
from tasker.msgq import MsgQ, Registry, check_priority

log = logging.getLogger(__name__)

RESULTS_FIELD = "results"
"""The callback field that receives the members' outcomes."""


EXTRA_SETTINGS = ("expires", "lock", "lock_defaults")
"""Settings a class declares only when it sets them, so the settings of a
class without them read as before: `expires` (seconds), `lock` (its
template) and `lock_defaults` (`lock_defaults`)."""


def class_settings(cls: type[MsgQ]) -> dict[str, Any]:
    """What a publisher takes from a class for each row: {"timeout_s" (s),
    "retry", "result_topic", "priority"}, and those of EXTRA_SETTINGS the
    class sets."""
    out: dict[str, Any] = {
        "timeout_s": cls.timeout,
        "retry": cls.retry,
        "result_topic": cls.result_topic,
        "priority": cls.priority,
    }
    if cls.expires is not None:
        out["expires"] = float(cls.expires)
    if cls.lock is not None:
        out["lock"] = cls.lock
        fallback = lock_defaults(cls)
        if fallback:
            out["lock_defaults"] = fallback
    return out


def lock_defaults(cls: type[MsgQ]) -> dict[str, Any]:
    """{field: default} of the payload fields `cls.lock` names that have a
    default that is JSON text, a number, a bool or None: what the key of a
    row whose input was not built by this class (a chain step's input is the
    previous result, `publish_raw` takes JSON) is formatted with where the
    input leaves such a field out, as decoding into the class would."""
    if cls.lock is None:
        return {}
    named = limits.lock_fields(cls.lock)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in named:
            continue
        if f.default is not dataclasses.MISSING:
            value: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if value is None or isinstance(value, (str, int, float, bool)):
            out[f.name] = value
    return out


def lock_fields_of(settings: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """The fields a lock template of `settings` is formatted over for the JSON
    input `data` (a dict): its `lock_defaults`, then the input's own."""
    fields = dict(settings.get("lock_defaults") or {})
    if isinstance(data, dict):
        fields.update(data)
    return fields


DEFAULT_SETTINGS: Mapping[str, Any] = {
    "timeout_s": defaults.TASK_TIMEOUT_S,
    "retry": defaults.TASK_RETRY,
    "result_topic": None,
    "priority": 0,
}
"""The settings of a topic that no class here and no instance declared."""


def step_spec(cls: type[MsgQ]) -> dict[str, Any]:
    """What a later chain step keeps of its class: {"topic", "timeout_s",
    "retry", "result_topic", "priority"} and what it sets of EXTRA_SETTINGS
    (stored in the previous row's `chain_next`)."""
    return {"topic": cls.topic, **class_settings(cls)}


def declaration(cls: type[MsgQ]) -> dict[str, str | None]:
    """What an instance declares for a topic it serves (`store.topic_declare_many`):
    {"name", "settings": JSON text of `class_settings`, "payload_schema":
    JSON Schema text of the payload}."""
    return {
        "name": cls.topic,
        "settings": json.dumps(class_settings(cls), sort_keys=True, separators=(",", ":")),
        "payload_schema": cls.codec().schema_text(),
    }


def declared_settings(topic: str, text: str | None) -> dict[str, Any]:
    """The settings an instance declared for `topic` (JSON text, or None),
    each one checked: what is missing or unusable (a row from another
    version, edited by hand) is the default, with a warning (EXTRA_SETTINGS
    are left out then)."""
    out = dict(DEFAULT_SETTINGS)
    if text is None:
        return out
    try:
        found = json.loads(text)
    except (ValueError, RecursionError):
        found = None
    if not isinstance(found, dict):
        log.warning("topic %r: declared settings are not a JSON object; using the defaults", topic)
        return out
    for key, value in found.items():
        known = key in out or key in EXTRA_SETTINGS
        if known and _usable(key, value):
            out[key] = value
        elif known:
            log.warning("topic %r: declared %s %r is unusable; using %r", topic, key,
                        value, out.get(key))  # fmt: skip
    return out


def _usable(key: str, value: Any) -> bool:
    if key == "timeout_s":
        return (
            not isinstance(value, bool)
            and isinstance(value, (int, float))
            and 0 < value <= defaults.MAX_TIMEOUT_S
        )
    if key == "retry":
        return type(value) is int and 1 <= value <= defaults.MAX_RETRY
    if key == "result_topic":
        return topics.result_queue_problem(value) is None
    if key in EXTRA_SETTINGS:
        return _usable_extra(key, value)
    try:
        check_priority(value)
    except ConfigurationError:
        return False
    return True


def _usable_extra(key: str, value: Any) -> bool:
    try:
        if key == "expires":
            return limits.check_expires(value) is not None
        if key == "lock":
            return bool(limits.lock_fields(value))
    except ConfigurationError:
        return False
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))
        for k, v in value.items()
    )


def named_topics(registry: Registry, steps: object) -> list[str]:
    """The later steps of a chain given by a topic this app has no class
    for: those whose declared settings `chain_steps` needs (a name that can
    be no topic is left out: `chain_steps` refuses it before any look-up)."""
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        return []
    return [
        s for s in list(steps)[1:]
        if isinstance(s, str) and s not in registry and topics.topic_problem(s) is None
    ]  # fmt: skip


def chain_steps(
    registry: Registry,
    steps: Sequence[object],
    declared: Mapping[str, str | None] | None = None,
) -> tuple[MsgQ, list[dict[str, Any]]]:
    """The first step (a MsgQ instance) and the specs of the later ones.

    `declared`: {topic: settings JSON text} that instances declared, for the
    topics `named_topics` lists. Raises PayloadError for a malformed list,
    ConfigurationError for a topic no transport can carry, DuplicateTopic for
    a class whose topic another class holds.
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
        elif isinstance(step, str) and step in registry:
            cls = registry.get(step)
        elif isinstance(step, str):
            specs.append(_named_step(i, step, declared or {}))
            continue
        else:
            raise PayloadError(
                f"chain step {i} must be a topic or a MsgQ class, not {type(step).__name__}"
            )
        specs.append(step_spec(cls))
    return first, specs


def _named_step(i: int, topic: str, declared: Mapping[str, str | None]) -> dict[str, Any]:
    problem = topics.topic_problem(topic)
    if problem:
        raise ConfigurationError(f"chain step {i}: topic {topic!r} {problem}")
    if declared.get(topic) is None:
        log.warning(
            "chain step %d: no class here and no instance declared topic %r; "
            "it runs with the default settings once something consumes it", i, topic,
            extra={"action": "chain_undeclared"},
        )  # fmt: skip
    return {"topic": topic, **declared_settings(topic, declared.get(topic))}


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
