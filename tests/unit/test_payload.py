"""Typed payloads (tasker.payload through MsgQ.encode / decode / from_dict)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from typing import Any, Literal

import pytest

from tasker import MsgQ
from tasker.exceptions import ConfigurationError, PayloadError


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


@dataclasses.dataclass
class Box:
    width: int
    height: int = 1


class Order(MsgQ):
    topic = "shop.order"
    sku: str
    tags: list[str] = dataclasses.field(default_factory=list)
    when: dt.datetime | None = None
    size: Size = Size.SMALL
    mode: Literal["fast", "slow"] = "fast"
    box: Box | None = None
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    note: str | None = None
    price: float = 0.0

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None


def test_rich_types_round_trip_as_plain_json() -> None:
    when = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.timezone.utc)
    order = Order(sku="a", tags=["x"], when=when, size=Size.LARGE, mode="slow", box=Box(2, 3))
    text = order.encode()
    assert json.loads(text) == {
        "sku": "a",
        "tags": ["x"],
        "when": "2026-11-30T09:15:00Z",
        "size": "l",
        "mode": "slow",
        "box": {"width": 2, "height": 3},
        "counts": {},
        "note": None,
        "price": 0.0,
    }
    back = Order.decode(text)
    assert back == order
    assert isinstance(back.box, Box) and back.size is Size.LARGE and back.when == when


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"sku": "a", "tags": ["x", 3]}', "field $.tags[1] must be str, got int"),
        ('{"sku": "a", "when": "yesterday"}', "field $.when: invalid RFC3339"),
        ('{"sku": "a", "size": "m"}', "field $.size: invalid enum value 'm'"),
        ('{"sku": "a", "mode": "warp"}', "field $.mode: invalid enum value 'warp'"),
        ('{"sku": "a", "box": {"height": 2}}', "missing field $.box.width"),
        ('{"sku": "a", "box": {"width": "2"}}', "field $.box.width must be int, got str"),
        ('{"sku": "a", "box": [2]}', "field $.box must be object | null, got array"),
        ('{"sku": "a", "counts": {"x": "1"}}', "must be int, got str"),
        ('{"sku": "a", "price": 1e999}', "field $.price: number out of range"),
        ('{"sku": "a", "price": NaN}', "not valid JSON"),
        ('"sku"', "input must be a JSON object, got str"),
        ('{"sku": "a", "sku2": 1}', "unknown field $.sku2"),
        ('{"sku": "a"', "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_bad_input_names_the_path(text: str, message: str) -> None:
    with pytest.raises(PayloadError) as err:
        Order.decode(text)
    assert message in str(err.value)
    assert str(err.value).startswith("shop.order: ")


def test_input_written_before_msgspec_still_decodes() -> None:
    # Python's json: spaces, ASCII escapes, a lone surrogate escaped, ints for floats
    old = json.dumps({"sku": "caf\u00e9 \ud800", "tags": ["\u2603"], "price": 3})
    assert "\\ud800" in old
    order = Order.decode(old)
    assert order.sku == "caf\u00e9 \ud800" and order.tags == ["\u2603"] and order.price == 3.0
    assert Order.decode(old.encode()) == order


def test_publish_side_refuses_what_would_fail_later() -> None:
    with pytest.raises(PayloadError, match=r"field \$\.tags\[0\] must be str, got int"):
        Order(sku="a", tags=[1]).encode()  # type: ignore[list-item]
    with pytest.raises(PayloadError, match=r"field \$\.price must be a finite number, got nan"):
        Order(sku="a", price=float("nan")).encode()
    with pytest.raises(PayloadError, match=r"field \$\.price must be a finite number, got inf"):
        Order(sku="a", price=float("inf")).encode()
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        Order(sku=object()).encode()  # type: ignore[arg-type]
    odd = Order(sku="\ud800\x00\U0001f600", note="x" * 100_000)
    assert Order.decode(odd.encode()) == odd  # any text, lone surrogate and NUL included


def test_from_dict_checks_like_decode() -> None:
    assert Order.from_dict({"sku": "a", "when": "2026-11-30T09:15:00+01:00"}).when == dt.datetime(
        2026, 11, 30, 8, 15, tzinfo=dt.timezone.utc
    )
    with pytest.raises(PayloadError, match=r"field \$\.tags\[1\] must be str, got int"):
        Order.from_dict({"sku": "a", "tags": ["x", 3]})
    with pytest.raises(PayloadError, match="input must be a JSON object, got array"):
        Order.from_dict([1])


class Opaque:
    pass


def test_a_field_type_json_cannot_carry_is_refused_when_defined() -> None:
    with pytest.raises(ConfigurationError, match=r"test_payload\..*Holder: .*type is not JSON"):

        class Holder(MsgQ):
            topic = "t.opaque"
            thing: Opaque

            def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
                return None


def test_a_type_defined_further_down_resolves_at_first_use() -> None:
    assert Later.decode('{"item": {"name": "x"}}').item == Item("x")


class Later(MsgQ):
    topic = "t.later"
    item: Item

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None


@dataclasses.dataclass
class Item:
    name: str


class Loose(MsgQ):
    topic = "t.loose"
    anything: Any = None

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None


def test_any_takes_any_json_but_not_endless_nesting() -> None:
    assert Loose.decode('{"anything": [1, {"a": null}]}').anything == [1, {"a": None}]
    deep = '{"anything": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(PayloadError, match=r"t\.loose: input nests too deep"):
        Loose.decode(deep)
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(PayloadError, match=r"t\.loose: input is not JSON-serialisable"):
        Loose.from_dict({"anything": nested}).encode()
