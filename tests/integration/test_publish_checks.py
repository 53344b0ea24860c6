"""Values a publisher gives are checked where given, on both databases:
nothing is inserted and the error says what is wrong."""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker
from tasker.exceptions import ConfigurationError, PayloadError
from tasker.schema import task


class Ok(MsgQ):
    topic = "c.ok"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def _count(app: Tasker) -> int:
    with app.transaction() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(task)).scalar_one()


@pytest.mark.parametrize(
    ("topic", "payload", "error", "needle"),
    [
        ("", "{}", ConfigurationError, "non-empty"),
        ("x" * 201, "{}", ConfigurationError, "at most 200"),
        ("a\x00b", "{}", ConfigurationError, "U+0000"),
        ("raw.t", '{"n": NaN}', PayloadError, "NaN is not JSON"),
        ("raw.t", '{"n": -Infinity}', PayloadError, "Infinity is not JSON"),
        ("raw.t", {"n": math.inf}, PayloadError, "not JSON"),
        ("raw.t", "[1]", PayloadError, "JSON object"),
    ],
)
def test_publish_raw_refuses_what_is_not_a_topic_or_not_json(
    app: Tasker, topic: str, payload: Any, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as info:
        app.publish_raw(topic, payload)
    assert needle in str(info.value)
    assert _count(app) == 0


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": 1e12}, "at most"),
        ({"timeout": 0.0004}, "at least 0.001"),  # whole ms in the row: it would store 0
        ({"retry": 2**40}, "retry"),
        ({"retry": 0}, "retry"),
    ],
)
def test_publish_refuses_out_of_range_runs(app: Tasker, kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        app.publish(Ok(), **kw)
    assert needle in str(info.value)
    assert _count(app) == 0


@pytest.mark.parametrize(
    "attrs",
    [
        {"concurrency": 0},
        {"retry": -1},
        {"timeout": math.nan},
        {"timeout": 1e12},
        {"timeout": 0.0001},
        {"isolation": "x"},
    ],
)
def test_a_class_with_impossible_settings_is_refused_when_defined(attrs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        type("Bad", (MsgQ,), {"topic": "c.bad", **attrs, "exec": Ok.exec})
    assert next(iter(attrs)) in str(info.value)


class Billed(MsgQ):
    topic = "c.billed"
    result_topic = "c.billing.results"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def test_every_publish_path_keeps_the_result_topic(app: Tasker) -> None:
    """Plain, keyed and chained inserts build their rows the same way."""
    ids = [
        app.publish(Billed()),
        app.publish(Billed(), unique_key="k1"),
        app.chain([Billed(), Billed]),
    ]
    with app.transaction() as conn:
        got = conn.execute(sa.select(task.c.result_topic).where(task.c.id.in_(ids))).scalars()
        assert list(got) == [Billed.result_topic] * 3
