"""`MsgQ`, the class users subclass, and the per-app topic registry.

Payload fields are declared like a dataclass; a subclass becomes a dataclass
when it is defined. Decoding is strict: input that is not a JSON object, a
missing or unknown field, or a value of the wrong type for a bool, str, int
or float field is a `PayloadError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, ClassVar

from tasker import defaults
from tasker.exceptions import ConfigurationError, DuplicateTopic, PayloadError, UnknownTopic

if typing.TYPE_CHECKING:
    from tasker.context import Context

ISOLATIONS = ("thread", "process")


class MsgQ:
    """Base class of a task type: class attributes configure it, fields are its input."""

    topic: ClassVar[str] = ""
    concurrency: ClassVar[int] = defaults.TOPIC_CONCURRENCY
    timeout: ClassVar[float] = defaults.TASK_TIMEOUT_S
    retry: ClassVar[int] = defaults.TASK_RETRY
    spec: ClassVar[str | float] = defaults.TOPIC_SPEC
    isolation: ClassVar[str] = "thread"
    periodic: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(cls)

    def exec(self, ctx: Context, worker_id: int) -> object:
        """Run the task; raising is a failure, returning is success (result stored as JSON)."""
        raise NotImplementedError(f"{type(self).__name__} does not define exec()")

    def encode(self) -> str:
        """The task's input as JSON text."""
        try:
            return json.dumps(self.payload(), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"{self.topic}: input is not JSON-serialisable: {exc}") from None

    def payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def decode(cls, text: str | bytes) -> MsgQ:
        """Build an instance from JSON input, or raise `PayloadError` saying what is wrong."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"{cls.topic}: input is not valid JSON ({exc})") from None
        return cls.from_dict(data)

    @classmethod
    def _schema(cls) -> tuple[dict[str, dataclasses.Field[Any]], dict[str, Any]]:
        """Fields and resolved type hints, worked out once per class (a hot path)."""
        cached = cls.__dict__.get("_tasker_schema")
        if cached is None:
            fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            cached = (fields, typing.get_type_hints(cls))
            cls._tasker_schema = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def from_dict(cls, data: Any) -> MsgQ:
        if not isinstance(data, dict):
            raise PayloadError(
                f"{cls.topic}: input must be a JSON object, not {type(data).__name__}"
            )
        fields, hints = cls._schema()
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise PayloadError(f"{cls.topic}: unknown field(s) {', '.join(unknown)}")
        for name, f in fields.items():
            if name not in data:
                if _has_default(f):
                    continue
                raise PayloadError(f"{cls.topic}: missing field {name!r}")
            problem = _type_problem(data[name], hints.get(name, Any))
            if problem:
                raise PayloadError(f"{cls.topic}: field {name!r} {problem}")
        return cls(**data)


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit `hint`, or None. Checks the JSON-shaped types."""
    if hint is Any or hint is object:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if any(_type_problem(value, o) is None for o in options):
            return None
        return f"must be {_name(hint)}, got {_json_name(value)}"
    if hint is type(None):
        return None if value is None else f"must be null, got {_json_name(value)}"
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint)
    if expected is not None:
        if isinstance(value, bool) and hint is not bool:
            return f"must be {hint.__name__}, got bool"
        if not isinstance(value, expected):
            return f"must be {hint.__name__}, got {_json_name(value)}"
        return None
    base = origin or hint
    if base in (list, tuple, set, frozenset) or base is typing.Sequence:
        return None if isinstance(value, list) else f"must be a list, got {_json_name(value)}"
    if base is dict or base is typing.Mapping:
        return None if isinstance(value, dict) else f"must be an object, got {_json_name(value)}"
    return None


def _json_name(value: Any) -> str:
    return {
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        list: "list",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def validate_class(cls: type[MsgQ]) -> None:
    """Refuse a MsgQ class whose configuration makes no sense, naming what is wrong."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(cls.topic, str) or not cls.topic.strip():
        raise ConfigurationError(f"{where}: `topic` must be a non-empty string")
    if len(cls.topic) > 200:
        raise ConfigurationError(f"{where}: `topic` is longer than 200 characters")
    if not isinstance(cls.concurrency, int) or cls.concurrency < 1:
        raise ConfigurationError(f"{where}: `concurrency` must be an int >= 1")
    if not isinstance(cls.timeout, (int, float)) or cls.timeout <= 0:
        raise ConfigurationError(f"{where}: `timeout` must be seconds > 0")
    if not isinstance(cls.retry, int) or cls.retry < 1:
        raise ConfigurationError(f"{where}: `retry` must be an int >= 1")
    if cls.isolation not in ISOLATIONS:
        raise ConfigurationError(f"{where}: `isolation` must be one of {ISOLATIONS}")
    if cls.exec is MsgQ.exec:
        raise ConfigurationError(f"{where}: define exec(self, ctx, worker_id)")
    from tasker import triggers

    triggers.make_trigger(cls.spec, where=f"{where}.spec")
    if cls.periodic is not None:
        triggers.make_trigger(cls.periodic, where=f"{where}.periodic")


class Registry:
    """Topic -> MsgQ class, owned by one `Tasker` app."""

    def __init__(self) -> None:
        self._by_topic: dict[str, type[MsgQ]] = {}

    def register(self, cls: type[MsgQ]) -> type[MsgQ]:
        if not (isinstance(cls, type) and issubclass(cls, MsgQ)) or cls is MsgQ:
            raise ConfigurationError(f"{cls!r} is not a MsgQ subclass")
        validate_class(cls)
        known = self._by_topic.get(cls.topic)
        if known is not None and known is not cls:
            raise DuplicateTopic(
                f"topic {cls.topic!r} is declared by both "
                f"{known.__module__}.{known.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        self._by_topic[cls.topic] = cls
        return cls

    def register_all(self, classes: Iterable[type[MsgQ]]) -> None:
        for cls in classes:
            self.register(cls)

    def get(self, topic: str) -> type[MsgQ]:
        try:
            return self._by_topic[topic]
        except KeyError:
            raise UnknownTopic(f"no MsgQ class is registered for topic {topic!r}") from None

    def find(self, topic: str) -> type[MsgQ] | None:
        return self._by_topic.get(topic)

    def __contains__(self, topic: object) -> bool:
        return topic in self._by_topic

    def __iter__(self) -> typing.Iterator[type[MsgQ]]:
        return iter(self._by_topic.values())

    def __len__(self) -> int:
        return len(self._by_topic)

    def topics(self) -> list[str]:
        return sorted(self._by_topic)


def classes_in(namespace: Any) -> list[type[MsgQ]]:
    """MsgQ subclasses defined in a module (not merely imported into it)."""
    found = []
    for value in vars(namespace).values():
        if (
            isinstance(value, type)
            and issubclass(value, MsgQ)
            and value is not MsgQ
            and value.__dict__.get("topic")
        ):
            found.append(value)
    return found
