"""Topics no file name or AMQP queue name could hold, with typed payloads, run end
to end on every transport: the folder broker, RabbitMQ and Redis (real servers),
through the runtime in this process."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import kombu
import pytest

from tasker import Context, MsgQ, Tasker, brokers, db
from tests.conftest import core_set_timings

REDIS_URL = os.environ.get("TASKER_TEST_REDIS", "redis://127.0.0.1:6379/13")


class Tone(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclasses.dataclass
class Where:
    city: str
    floor: int | None = None


def make_class(topic: str) -> type[MsgQ]:
    def exec_(self: Any, ctx: Context, worker_id: int) -> object:
        return {
            "tags": self.tags,
            "when": self.when.isoformat(),
            "tone": self.tone.value,
            "city": self.where.city,
            "mode": self.mode,
        }

    return type(
        "Awkward",
        (MsgQ,),
        {
            "topic": topic,
            "spec": 0.1,
            "exec": exec_,
            "__annotations__": {
                "tags": list[str],
                "when": dt.datetime,
                "tone": Tone,
                "where": Where,
                "mode": Literal["a", "b"],
            },
            "mode": "a",
        },
    )


@pytest.fixture(params=["folder", "amqp", "redis"])
def broker_url(request: pytest.FixtureRequest, local_broker: str) -> str:
    if request.param == "folder":
        return local_broker
    if request.param == "amqp":
        return str(request.getfixturevalue("amqp_url"))
    return REDIS_URL


@pytest.fixture
def app(pg_url: str, broker_url: str) -> Iterator[Tasker]:
    engine = db.make_engine(pg_url)
    with db.transaction(engine) as conn:
        core_set_timings(conn, master_out_of_date_ms=1200, instance_heartbeat_ms=200)
    engine.dispose()
    a = Tasker(pg_url, broker=broker_url)
    yield a
    a.close()


def test_awkward_topics_run_on_every_transport(app: Tasker, broker_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [
        f"reports/daily/{tag}",  # a path separator: the folder broker's file name
        f"caf\u00e9 \u2603 {tag} ../..",  # non-ASCII, spaces, dots
        "\U0001f600" * 191 + tag + "/",  # 200 characters, 776 bytes of UTF-8
    ]
    classes = [make_class(n) for n in names]
    app.register(*classes)
    when = dt.datetime(2026, 3, 29, 3, 0, tzinfo=dt.timezone.utc)
    ids = [
        app.publish(cls(tags=["x", n[:5]], when=when, tone=Tone.HIGH, where=Where("Z\u00fcrich")))
        for cls, n in zip(classes, names, strict=True)
    ]
    app.start()
    try:
        for tid, n in zip(ids, names, strict=True):
            res = app.result(tid, timeout=20)
            assert res.success, res.error
            assert res.result == {
                "tags": ["x", n[:5]],
                "when": "2026-03-29T03:00:00+00:00",
                "tone": "high",
                "city": "Z\u00fcrich",
                "mode": "a",
            }
    finally:
        app.stop()
        if broker_url.startswith("amqp"):
            with kombu.Connection(broker_url) as conn:
                for n in names:
                    kombu.Queue(brokers.queue_name(n)).bind(conn.channel()).delete()
