from __future__ import annotations

import pytest

from tasker import MsgQ
from tasker.exceptions import ConfigurationError, DuplicateTopic, PayloadError, UnknownTopic
from tasker.msgq import Registry, classes_in


class Resize(MsgQ):
    topic = "image.resize"
    concurrency = 4
    timeout = 30.0
    path: str
    width: int = 640
    ratio: float = 1.0
    keep: bool = False
    tags: list[str] | None = None

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return {"ok": True}


def test_fields_are_a_dataclass() -> None:
    r = Resize(path="a.png")
    assert (r.path, r.width, r.keep) == ("a.png", 640, False)
    assert Resize.decode(r.encode()) == r


def test_float_field_takes_an_int() -> None:
    assert Resize.decode('{"path": "a", "ratio": 2}').ratio == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "input must be a JSON object, got array"),
        ("{}", "missing field $.path"),
        ('{"path": 3}', "field $.path must be str, got int"),
        ('{"path": "a", "width": "640"}', "field $.width must be int, got str"),
        ('{"path": "a", "width": true}', "field $.width must be int, got bool"),
        ('{"path": "a", "width": 1.5}', "field $.width must be int, got float"),
        ('{"path": "a", "ratio": "x"}', "field $.ratio must be float, got str"),
        ('{"path": "a", "keep": 1}', "field $.keep must be bool, got int"),
        ('{"path": "a", "tags": "x"}', "field $.tags must be array | null, got str"),
        ('{"path": "a", "color": "red"}', "unknown field $.color"),
    ],
)
def test_bad_input_is_named(text: str, message: str) -> None:
    with pytest.raises(PayloadError, match=None) as info:
        Resize.decode(text)
    assert message in str(info.value)
    assert str(info.value).startswith("image.resize:")


def test_registry_refuses_duplicate_topic() -> None:
    class Other(MsgQ):
        topic = "image.resize"

        def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
            return None

    reg = Registry()
    reg.register(Resize)
    reg.register(Resize)  # the same class twice is fine
    with pytest.raises(DuplicateTopic, match=r"image\.resize"):
        reg.register(Other)
    assert reg.get("image.resize") is Resize
    with pytest.raises(UnknownTopic):
        reg.get("nope")


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"topic": ""}, "topic"),
        ({"concurrency": 0}, "concurrency"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"retry": 0}, "retry"),
        ({"spec": "every now and then"}, "spec"),
        ({"isolation": "vm"}, "isolation"),
    ],
)
def test_bad_class_configuration(attrs: dict[str, object], message: str) -> None:
    def exec_(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(ConfigurationError, match=message):  # when defined, or registered
        cls = type("Bad", (MsgQ,), {"topic": "bad", "exec": exec_, **attrs})
        Registry().register(cls)


def test_classes_in_module_finds_defined_classes() -> None:
    import tests.unit.test_msgq as mod

    assert Resize in classes_in(mod)


def _define(**attrs: object) -> type[MsgQ]:
    def exec_(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None

    return type("Nightly", (MsgQ,), {"topic": "nightly", "exec": exec_, **attrs})


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"timezone": "Europe/Berlinn"}, r"Nightly\.timezone: unknown time zone 'Europe/Berlinn'"),
        ({"timezone": None}, r"Nightly\.timezone: None is not an IANA time zone name"),
        ({"catch_up": "some"}, r"Nightly\.catch_up: 'some' must be one of latest, all, none"),
        ({"periodic": "0 3 * * 8"}, r"Nightly\.periodic: '0 3 \* \* 8': bad day-of-week"),
        ({"periodic": "0 0 31 4 *"}, r"Nightly\.periodic: .*day-of-month"),
        ({"spec": "*/1 * * *"}, r"Nightly\.spec: '\*/1 \* \* \*' has 4 fields"),
        ({"spec": float("nan")}, r"Nightly\.spec: an interval must be a finite"),
        ({"topic": "x" * 201}, r"Nightly: topic 'x+' is 201 characters long"),
        ({"topic": "a\nb"}, r"Nightly: topic 'a\\nb' contains the control character"),
        ({"topic": 7}, r"Nightly: topic 7 must be text, not int"),
        (
            {"periodic": "@daily", "__annotations__": {"day": "str"}},
            r"Nightly: a periodic task is built from defaults; give day a default",
        ),
    ],
)
def test_bad_definitions_are_refused_when_the_class_is_defined(
    attrs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as err:
        _define(**attrs)
    assert str(err.value).startswith("tests.unit.test_msgq.Nightly")


def test_good_definitions() -> None:
    cls = _define(periodic="0 3 * * SUN", timezone="Europe/Berlin", catch_up="all", spec=0.5)
    assert (cls.timezone, cls.catch_up) == ("Europe/Berlin", "all")
    Registry().register(cls)
    assert _define(topic="reports/daily \u00e9t\u00e9").topic == "reports/daily \u00e9t\u00e9"
    assert (MsgQ.timezone, MsgQ.catch_up) == ("UTC", "latest")
