"""The pure rules of `expires` and `lock` (DESIGN 1): class checks, the lock
key built from a template at publish, and what a publish row gets."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from tasker import ConfigurationError, MsgQ, limits
from tasker.context import Context
from tasker.exceptions import InvalidTime


class Keyed(MsgQ):
    topic = "r.keyed"
    lock = "customer:{customer_id}/{region}"
    expires = 30
    customer_id: int = 0
    region: str = "eu"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def test_a_plain_class_gets_no_extra_columns() -> None:
    class Plain(MsgQ):
        topic = "r.plain"

    assert limits.publish_extras(Plain, lambda: {}) == {}


def test_the_class_template_and_expiry_make_the_row() -> None:
    msg = Keyed(customer_id=42, region="caf\u00e9")
    assert limits.publish_extras(Keyed, msg.payload) == {
        "lock_key": "customer:42/caf\u00e9", "expires_s": 30.0
    }


def test_publish_values_override_the_class() -> None:
    at = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    out = limits.publish_extras(Keyed, lambda: {}, expires=at, lock="k")
    assert out == {"expires_at": at, "lock_key": "k"}
    naive = limits.publish_extras(Keyed, lambda: {}, expires=at.replace(tzinfo=None), lock="k")
    assert naive["expires_at"] == at  # naive means UTC
    assert limits.publish_extras(Keyed, lambda: {}, expires=dt.timedelta(minutes=1), lock="k")[
        "expires_s"
    ] == 60.0


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, 0, -5, dt.timedelta(0), 10**30, "1m", True, object()]
)
def test_a_bad_publish_expires_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidTime, match="expires"):
        limits.publish_extras(Keyed, lambda: {}, expires=bad, lock="k")


@pytest.mark.parametrize(
    ("template", "fields", "says"),
    [
        ("c:{missing}", {"a": 1}, "no payload field"),
        ("c:{a[0]}", {"a": 1}, "does not format"),
        ("c:{a.b}", {"a": 1}, "does not format"),
        ("c:{a}", {"a": "x" * 300}, "at most 255"),
        ("c:{a}", {"a": "\x00"}, "NUL"),
        ("c:{a}", {"a": "\udcff"}, "surrogate"),
        ("{a}", {"a": ""}, "empty"),
    ],
)
def test_a_lock_that_does_not_format_into_a_key_is_refused(
    template: str, fields: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says):
        limits.format_lock(template, fields)


def test_odd_unicode_keys_are_kept_exactly() -> None:
    key = "\u05d0\U0001f600 \u0301e\ufeff\u200f"  # Hebrew, emoji, combining, BOM, RLM
    assert limits.format_lock("{a}", {"a": key}) == key
    assert limits.check_lock_key(key) == key


@pytest.mark.parametrize("ch", ["\x1b", "\t", "\n", "\x7f", "\x85", "\u202a", "\u202e", "\u2066",
                                "\u2069"])  # fmt: skip
def test_a_lock_key_with_a_control_or_bidi_character_is_refused(ch: str) -> None:
    with pytest.raises(ConfigurationError, match=f"U\\+{ord(ch):04X}"):
        limits.format_lock("c:{a}", {"a": f"x{ch}y"})
    with pytest.raises(ConfigurationError, match=f"lock must not contain .*U\\+{ord(ch):04X}"):
        limits.check_lock_key(f"k{ch}")


@pytest.mark.parametrize(
    ("attrs", "named"),
    [
        ({"lock": "c:{nope}"}, "nope"),
        ({"lock": "c:{}"}, "name a payload field"),
        ({"lock": "c:{0}"}, "name a payload field"),
        ({"lock": "c:{a"}, "no format string"),
        ({"lock": ""}, "lock"),
        ({"lock": 5}, "lock"),
        ({"expires": 0}, "expires"),
        ({"expires": -1}, "expires"),
        ({"expires": math.nan}, "expires"),
        ({"expires": math.inf}, "expires"),
        ({"expires": 10**400}, "expires"),
        ({"expires": "1h"}, "expires"),
        ({"expires": True}, "expires"),
    ],
)
def test_bad_class_attributes_are_refused_when_the_class_is_defined(
    attrs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        type("Bad", (MsgQ,), {"topic": "r.bad", "__annotations__": {"a": "int"}, "a": 0, **attrs})
