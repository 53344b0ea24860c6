"""An operations test: a rolling restart under a steady stream (DESIGN 6,
graceful stop). Three real `tasker run` instances; a publisher thread sends
3,000 short tasks over about 15 s; meanwhile each instance in turn gets
SIGTERM, must exit 0, and is replaced by a new one (registered before the
next goes). At the end every task is `success`, ran exactly once (one
effect line per task, `attempts` equal to its executions) and the longest
gap between consecutive starts over the run is printed as
`rolling_restart.<pg|sqlite>.longest_start_gap: <n> ms` for the release
note (pytest shows it without `-s`).

On PostgreSQL + RabbitMQ and on the embedded default (SQLite + folder broker).
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
import sqlalchemy as sa

from tasker import Tasker, brokers
from tasker.schema import task
from tests.acceptance.cluster import Cluster, wait_for
from tests.conftest import migrate, pg_clone
from tests.fixtures.rolling import Rolling

pytestmark = [pytest.mark.acceptance]

TASKS = 3000
STREAM_S = 15.0
BATCH = 5  # one publish every STREAM_S * BATCH / TASKS = 25 ms: the gaps' floor
INSTANCES = 3
MODULE = "tests.fixtures.rolling"


@pytest.fixture
def topic() -> str:
    """A topic (and queue) of this run alone."""
    return f"t.rolling.{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=[pytest.param("pg", marks=[pytest.mark.pg, pytest.mark.rabbit]), "sqlite"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path, topic: str) -> Iterator[Cluster]:
    if request.param == "pg":
        amqp_url = request.getfixturevalue("amqp_url")
        try:
            with pg_clone(request.getfixturevalue("pg_template")) as db_url:
                yield from _cluster(db_url, amqp_url, tmp_path)
        finally:
            with kombu.Connection(amqp_url) as conn:
                kombu.Queue(brokers.queue_name(topic)).bind(conn.channel()).delete()
    else:
        db_url = f"sqlite:///{tmp_path / 'tasker.db'}"
        migrate(db_url)
        yield from _cluster(db_url, f"filesystem://{tmp_path / 'broker'}", tmp_path)


def _cluster(db_url: str, broker_url: str, tmp: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, broker_url, tmp)
    c.set_timings(2000, 500)  # a crashed master would be replaced in ~2 s
    try:
        yield c
    finally:
        c.close()
        print(c.logs())


class Stream(threading.Thread):
    """Publishes TASKS tasks of `cls` in batches at a steady rate over STREAM_S."""

    def __init__(self, app: Tasker, cls: type[Rolling]) -> None:
        super().__init__(name="rolling-publisher", daemon=True)
        self.app = app
        self.cls = cls
        self.ids: list[int] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        begin = time.monotonic()
        try:
            for k in range(TASKS // BATCH):
                # Pacing, not waiting for a condition: batch k is due at k * 25 ms.
                self._halt.wait(max(0.0, begin + k * STREAM_S * BATCH / TASKS - time.monotonic()))
                if self._halt.is_set():
                    return
                batch = [self.cls(n=k * BATCH + i) for i in range(BATCH)]
                self.ids.extend(self.app.publish_many(batch))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def published(self) -> int:
        return len(self.ids)

    def halt(self) -> None:
        self._halt.set()


def test_rolling_restart_under_a_steady_stream(
    cluster: Cluster, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    pids = cluster.start(INSTANCES, module=MODULE, TASKER_TEST_TOPIC=topic)
    wait_for(cluster.master, 15, "a master")
    app = Tasker(cluster.db_url, broker=cluster.broker_url)
    cls = type("Rolling", (Rolling,), {"topic": topic, "__module__": __name__})
    app.register(cls)
    stream = Stream(app, cls)
    exits: dict[int, int] = {}
    at_stop: list[int] = []  # tasks published when each SIGTERM was sent
    try:
        stream.start()
        for k, pid in enumerate(pids, start=1):
            # Restarts spread over the stream: the k-th once k quarters are out.
            wait_for(lambda k=k: stream.published() >= k * TASKS // (INSTANCES + 1)
                     or stream.error, 30, f"{k} quarter(s) of the stream published")  # fmt: skip
            cluster.signal(pid, signal.SIGTERM)
            at_stop.append(stream.published())
            exits[pid] = cluster.wait_exit(pid, 60)
            # Returns once the replacement has its instance row.
            cluster.start(1, module=MODULE, TASKER_TEST_TOPIC=topic)
        stream.join(60)
        assert not stream.is_alive(), "the publisher did not finish"
        assert stream.error is None, f"publishing failed: {stream.error!r}"
        ids = stream.ids
        assert len(ids) == TASKS
        wait_for(lambda: cluster.counts(ids)["success"] == TASKS, 60, f"{TASKS} successes")
    finally:
        stream.halt()
        app.close()

    assert exits == dict.fromkeys(pids, 0), f"stopped instances' exit codes: {exits}"
    assert max(at_stop) < TASKS, f"a restart came after the stream ended: {at_stop}"
    assert cluster.counts(ids) == {"success": TASKS}
    effects = cluster.effects_of("rolling")
    assert set(effects) == set(ids), "a task never ran"
    twice = {t: n for t, n in effects.items() if n != 1}
    assert not twice, f"ran more than once: {dict(list(twice.items())[:10])}"
    with cluster.engine.begin() as conn:  # typed columns: SQLite keeps times as text
        rows = conn.execute(sa.select(task.c.id, task.c.attempts, task.c.started)).all()
    # A graceful stop hands back unstarted tasks without running them, so
    # every recorded attempt is a real execution.
    wrong = {r.id: r.attempts for r in rows if r.attempts != effects[r.id]}
    assert not wrong, f"attempts differ from executions: {dict(list(wrong.items())[:10])}"
    starts = sorted(r.started for r in rows)
    gap_ms = max((b - a).total_seconds() * 1000 for a, b in itertools.pairwise(starts))
    took = time.monotonic() - began
    name = "rolling_restart." + ("pg" if cluster.db_url.startswith("postgresql") else "sqlite")
    with capsys.disabled():
        print(f"\n{name}.longest_start_gap: {gap_ms:.0f} ms")
        print(f"{name}.wall_time: {took:.1f} s")
    # A graceful hand-over (resign, NOTIFY) takes well under the 2 s lease.
    assert gap_ms < 5000, f"dispatch stalled for {gap_ms:.0f} ms during the restarts"
