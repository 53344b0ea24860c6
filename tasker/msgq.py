"""`MsgQ`, the class users subclass, and the per-app topic registry.

Payload fields are declared like a dataclass; a subclass becomes a dataclass
when it is defined, and `tasker.payload` encodes and decodes it with msgspec
(element types checked, errors naming the field path). A class with a topic
is checked when it is defined: topic, `spec`, `periodic`, `timezone`,
`catch_up` and the payload field types; the rest when it is registered.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from tasker import cron, defaults, limits, outcome, retry, topics
from tasker.exceptions import ConfigurationError, DuplicateTopic, UnknownTopic
from tasker.payload import Codec

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:
    from typing_extensions import dataclass_transform

if typing.TYPE_CHECKING:
    from tasker.context import Context

ISOLATIONS = ("thread", "process")


# Type checkers then see each subclass as the dataclass `__init_subclass__` makes
# of it. The settings below are ClassVars, as dataclasses.dataclass sees them at
# runtime too: a subclass's `topic = "x"` (no annotation) is no field either way.
@dataclass_transform()
class MsgQ:
    """Base class of a task type: class attributes configure it, fields are its input."""

    if typing.TYPE_CHECKING:
        # Set on every subclass by dataclasses.dataclass; declared so that
        # dataclasses.fields() accepts an instance.
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    topic: ClassVar[str] = ""
    concurrency: ClassVar[int] = defaults.TOPIC_CONCURRENCY
    timeout: ClassVar[float] = defaults.TASK_TIMEOUT_S
    retry: ClassVar[int] = defaults.TASK_RETRY
    spec: ClassVar[str | float] = defaults.TOPIC_SPEC
    isolation: ClassVar[str] = "thread"
    periodic: ClassVar[str | None] = None
    timezone: ClassVar[str] = "UTC"
    catch_up: ClassVar[str] = "latest"
    result_topic: ClassVar[str | None] = None
    """A durable queue of exactly this name that also gets every terminal
    outcome as JSON {"id", "topic", "success", "error", "result"}."""
    priority: ClassVar[int] = 0
    global_concurrency: ClassVar[int | None] = None
    rate_limit: ClassVar[str | None] = None
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (Exception,)
    """Exceptions of `exec` that use a run up; any other `Exception` fails the task now."""
    # Callable[..., float]: a ClassVar typed Callable[[int], float] is read by type
    # checkers as a method (self bound), which would refuse a staticmethod or lambda.
    backoff: ClassVar[float | Callable[..., float] | None] = None
    """Seconds between runs (fixed), or a callable attempt -> seconds; None:
    exponential with jitter."""
    expires: ClassVar[float | None] = None
    """Seconds after publish: a task not started by then never runs (failed, "expired")."""
    lock: ClassVar[str | None] = None
    """A format string over the payload fields ("customer:{customer_id}"):
    tasks sharing the key run one at a time across the cluster, in order."""
    _async_exec: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Decided once here: the consumer runs an `async def exec` on the
        # instance's event loop, so nothing per execution asks again.
        cls._async_exec = inspect.iscoroutinefunction(cls.exec)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(cls)
        if cls.topic != "":  # a base without a topic is checked through its subclasses
            validate_definition(cls, payload_now=False)

    def exec(self, ctx: Context, worker_id: int) -> object:
        """Run the task; raising is a failure, returning is success (result stored as JSON)."""
        raise NotImplementedError(f"{type(self).__name__} does not define exec()")

    def encode(self) -> str:
        """The task's input as compact JSON text; `PayloadError` if a field value does not
        fit its type or is not JSON (NaN, an object)."""
        return type(self).codec().encode(self)

    def payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def decode(cls, text: str | bytes) -> MsgQ:
        """Build an instance from JSON input, or raise `PayloadError` saying what is wrong
        and where (`$.tags[1]`)."""
        return cls.codec().decode(text)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Any) -> MsgQ:
        """Build an instance from decoded JSON values; `PayloadError` as `decode`."""
        return cls.codec().from_dict(data)  # type: ignore[no-any-return]

    @classmethod
    def retry_policy(cls) -> outcome.Policy:
        """The class's `retry_on` and `backoff` as one value, built once."""
        found = cls.__dict__.get("_tasker_policy")
        if found is None:
            found = outcome.Policy(retry_on=cls.retry_on, backoff=cls.backoff)
            cls._tasker_policy = found  # type: ignore[attr-defined]
        return found

    @classmethod
    def codec(cls) -> Codec:
        """The class's payload codec, built once (the first use resolves the type hints)."""
        found = cls.__dict__.get("_tasker_codec")
        if found is None:
            found = Codec(cls, cls.topic, _where(cls))
            cls._tasker_codec = found  # type: ignore[attr-defined]
        return found


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


PRIORITY_MIN, PRIORITY_MAX = defaults.PRIORITY_MIN, defaults.PRIORITY_MAX
"""The range of the `priority` column (a PostgreSQL integer)."""


def check_priority(value: Any, *, where: str = "priority") -> int:
    """An int within the column's range; ConfigurationError naming `where` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{where} must be an int, not {value!r}")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ConfigurationError(f"{where} must be {PRIORITY_MIN} to {PRIORITY_MAX}, not {value}")
    return value


def validate_definition(cls: type[MsgQ], *, payload_now: bool = True) -> None:
    """Refuse what makes no sense in a class with a topic, naming the class and attribute.

    Checks the topic (`topics.topic_problem`), `result_topic`, `timezone`, `spec`,
    `periodic`, `catch_up`, `priority`, `global_concurrency`, `rate_limit` and,
    when its type hints resolve (a hint may name a class defined further down
    the module: then at registration), the payload types.
    """
    where = _where(cls)
    problem = topics.topic_problem(cls.topic)
    if problem:
        raise ConfigurationError(f"{where}: topic {cls.topic!r} {problem}")
    problem = topics.result_queue_problem(cls.result_topic)
    if problem:
        raise ConfigurationError(f"{where}: result_topic {cls.result_topic!r} {problem}")
    cron.zone(cls.timezone, where=f"{where}.timezone")
    cron.parse(cls.spec, cls.timezone, where=f"{where}.spec")
    cron.check_catch_up(cls.catch_up, where=f"{where}.catch_up")
    check_priority(cls.priority, where=f"{where}.priority")
    _check_runs(cls, where)
    _check_policy(cls, where)
    limits.limits_of(cls)
    limits.check_expires(cls.expires, where=f"{where}.expires")
    if cls.lock is not None:
        unknown = limits.lock_fields(cls.lock, where=f"{where}.lock") - {
            f.name for f in dataclasses.fields(cls)
        }
        if unknown:
            raise ConfigurationError(
                f"{where}.lock {cls.lock[:60]!r} names {', '.join(sorted(unknown))}, "
                "which is no payload field"
            )
    if cls.periodic is not None:
        cron.parse(cls.periodic, cls.timezone, where=f"{where}.periodic")
        needed = [f.name for f in dataclasses.fields(cls) if _required(f)]
        if needed:
            raise ConfigurationError(
                f"{where}: a periodic task is built from defaults; give "
                f"{', '.join(needed)} a default"
            )
    try:
        cls.codec()
    except NameError:
        if payload_now:
            raise ConfigurationError(f"{where}: cannot resolve a payload field type") from None


def _check_runs(cls: type[MsgQ], where: str) -> None:
    """`concurrency`, `timeout` (s), `retry` and `isolation`, each in range."""
    if type(cls.concurrency) is not int or not 1 <= cls.concurrency <= 10_000:
        raise ConfigurationError(f"{where}: `concurrency` must be an int from 1 to 10000")
    if (
        isinstance(cls.timeout, bool)
        or not isinstance(cls.timeout, (int, float))
        or not 0.001 <= cls.timeout <= defaults.MAX_TIMEOUT_S  # whole ms in the row
    ):
        raise ConfigurationError(
            f"{where}: `timeout` must be seconds > 0 (at least 0.001) and at most "
            f"{defaults.MAX_TIMEOUT_S:g}"
        )
    if type(cls.retry) is not int or not 1 <= cls.retry <= defaults.MAX_RETRY:
        raise ConfigurationError(f"{where}: `retry` must be an int from 1 to {defaults.MAX_RETRY}")
    if cls.isolation not in ISOLATIONS:
        raise ConfigurationError(f"{where}: `isolation` must be one of {ISOLATIONS}")


def _check_policy(cls: type[MsgQ], where: str) -> None:
    """`retry_on` a tuple of exception classes, `backoff` None, seconds or a callable."""
    on = cls.retry_on
    if not isinstance(on, tuple) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in on
    ):
        raise ConfigurationError(
            f"{where}: `retry_on` must be a tuple of exception classes, like "
            f"(ConnectionError,), not {on!r}"[:300]
        )
    b = cls.backoff
    if b is None or callable(b):
        return
    problem = retry.backoff_problem(b)
    if problem is not None:
        raise ConfigurationError(
            f"{where}: `backoff` must be None, seconds from 0 to "
            f"{retry.MAX_POLICY_BACKOFF_S:g} or a callable attempt -> seconds, not {b!r}"[:300]
        )


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def validate_class(cls: type[MsgQ]) -> None:
    """Refuse a MsgQ class whose configuration makes no sense, naming what is wrong."""
    where = _where(cls)
    if cls.topic == "":
        raise ConfigurationError(f"{where}: `topic` must be a non-empty string")
    validate_definition(cls)
    if cls.exec is MsgQ.exec:
        raise ConfigurationError(f"{where}: define exec(self, ctx, worker_id)")


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


def is_async(cls: type[MsgQ]) -> bool:
    """Whether `cls.exec` is an `async def` (decided when the class was defined)."""
    return cls._async_exec
