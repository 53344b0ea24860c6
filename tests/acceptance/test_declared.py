"""What a distributor without the worker code can do (DESIGN 7), with real
`tasker run` instances serving the topics, on PostgreSQL + RabbitMQ and on the
embedded default: chain by topic name with the settings the instances
declared, and have its raw payloads checked against their declared schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tasker import Tasker
from tasker.exceptions import PayloadError
from tests.acceptance.cluster import Cluster
from tests.fixtures.declared import MathAdd

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.declared"


@pytest.fixture
def distributor(any_cluster: Cluster) -> Iterator[Tasker]:
    """An app that registered no class at all."""
    app = Tasker(any_cluster.db_url, broker=any_cluster.broker_url)
    assert list(app.registry) == []
    yield app
    app.close()


def test_a_distributor_chains_by_name_with_the_declared_settings(
    any_cluster: Cluster, distributor: Tasker
) -> None:
    any_cluster.start(1, module=MODULE)
    declared = any_cluster.scalar("select settings from topic where name = 'math.add'")
    assert json.loads(declared) == {
        "timeout_s": 7.5, "retry": 2, "priority": 3, "result_topic": None
    }  # fmt: skip

    first = distributor.chain([MathAdd(value=10), "math.add", "math.add"])
    res = distributor.result(first, timeout=30)
    assert (res.success, res.result) == (True, {"value": 13})
    steps = any_cluster.query(
        "select chain_step, timeout, retry, priority from task where chain_id = :c "
        "order by chain_step", c=first,
    )  # fmt: skip
    assert [tuple(s) for s in steps] == [(1, 7500, 2, 3), (2, 7500, 2, 3), (3, 7500, 2, 3)]


def test_a_distributor_publish_is_checked_against_the_declared_schema(
    any_cluster: Cluster, distributor: Tasker
) -> None:
    any_cluster.start(1, module=MODULE)
    with pytest.raises(PayloadError, match=r"image\.tagged: \$\.tags\[1\]: 3 is not of type"):
        distributor.publish_raw("image.tagged", '{"tags": ["x", 3]}')
    assert any_cluster.scalar("select count(*) from task") == 0
    good = distributor.publish_raw("image.tagged", {"tags": ["x", "y"]})
    res = distributor.result(good, timeout=30)
    assert (res.success, res.result) == (True, {"tags": 2})
    row = any_cluster.query("select timeout, retry, priority from task where id = :i", i=good)
    assert tuple(row[0]) == (5000, 3, 0)  # Tagged's settings, the defaults
