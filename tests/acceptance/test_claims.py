"""Priorities, unique keys, cluster-wide limits and pause with real
`tasker run` processes: on PostgreSQL + RabbitMQ with two instances, and on
the embedded default (SQLite + the folder broker)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
import sqlalchemy as sa

from tasker import Tasker, admin, brokers
from tests.acceptance.cluster import ROOT, Cluster, wait_for
from tests.fixtures import claims
from tests.fixtures.claims import Capped, Ordered, Rated

pytestmark = [pytest.mark.acceptance]

MODULE = "tests.fixtures.claims"
FAST = {"out_of_date_ms": 2000, "heartbeat_ms": 500}


@pytest.fixture
def pg(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[tuple[Cluster, Tasker]]:
    with kombu.Connection(amqp_url) as conn:
        channel = conn.channel()
        for topic in claims.TOPICS:
            q = kombu.Queue(brokers.queue_name(topic), durable=True).bind(channel)
            q.declare()
            q.purge()
    c = Cluster(pg_url, amqp_url, tmp_path)
    c.set_timings(**FAST)
    app = Tasker(pg_url, broker=amqp_url)
    app.register(Capped, Rated, Ordered)
    yield c, app
    app.close()
    c.close()
    print(c.logs())


@pytest.fixture
def local(sqlite_url: str, local_broker: str, tmp_path: Path) -> Iterator[tuple[Cluster, Tasker]]:
    c = Cluster(sqlite_url, local_broker, tmp_path)
    app = Tasker(sqlite_url, broker=local_broker)
    app.register(Capped, Rated, Ordered)
    yield c, app
    app.close()
    c.close()
    print(c.logs())


def spans(c: Cluster, kind: str) -> list[tuple[float, float]]:
    if not c.effects.exists():
        return []
    rows = [ln.split() for ln in c.effects.read_text().splitlines()]
    return [(float(r[4]), float(r[5])) for r in rows if r and r[0] == kind]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def run_order(c: Cluster, kind: str, ids: list[int]) -> list[int]:
    """Task ids in the order their executions started (one instance with
    `concurrency = 1` runs one at a time; the process clock has microseconds,
    where SQLite's `started` has milliseconds)."""
    rows = [ln.split() for ln in c.effects.read_text().splitlines()]
    wanted = set(ids)
    runs = sorted((float(r[4]), int(r[1])) for r in rows if r and r[0] == kind)
    return [task_id for _, task_id in runs if task_id in wanted]


def stays(cond, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Check `cond` again and again for `seconds`: it must hold every time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond(), what
        time.sleep(0.05)


def cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasker.cli", *args], env=c.env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# --- PostgreSQL + RabbitMQ, two instances --------------------------------------


@pytest.mark.pg
@pytest.mark.rabbit
def test_global_concurrency_holds_across_two_instances(pg) -> None:  # type: ignore[no-untyped-def]
    c, app = pg
    c.start(2, module=MODULE)  # 8 slots and prefetch between them; the cap is 3
    wait_for(c.master, 10, "a master")
    ids = app.publish_many([Capped(sleep=0.2) for _ in range(30)])
    peak = 0
    deadline = time.monotonic() + 60
    while not c.all_terminal(ids):
        running = c.scalar("SELECT count(*) FROM task WHERE topic = :t AND status = 'running'",
                           t=Capped.topic)  # fmt: skip
        peak = max(peak, running)
        assert running <= 3, f"{running} running at once"
        assert time.monotonic() < deadline, "tasks did not finish"
    assert c.counts(ids)["success"] == len(ids)
    executions = spans(c, "capped")
    assert len(executions) == len(ids)
    assert most_at_once(executions) <= 3
    assert peak == 3 or most_at_once(executions) == 3, "the cap was never reached"


# Every claim of the rated topic, with the claim time the master used (its
# transaction's database clock): the limit counts claims, so the test reads
# them exactly, not through the jitter of delivery. (The start clears
# `dispatched`, so only a trigger sees every claim.)
CLAIM_LOG = [
    "CREATE TABLE claim_log (task_id bigint, at timestamptz)",
    """CREATE FUNCTION log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO claim_log VALUES (NEW.id, NEW.dispatched); RETURN NEW; END $$""",
    """CREATE TRIGGER claim_log AFTER UPDATE ON task FOR EACH ROW
       WHEN (NEW.topic = 'c.rated' AND NEW.dispatched IS NOT NULL
             AND NEW.dispatched IS DISTINCT FROM OLD.dispatched)
       EXECUTE FUNCTION log_claim()""",
]


def most_in_a_window(times: list[float], window_s: float) -> int:
    """The most of `times` in any half-open window [a, a + window_s)."""
    times = sorted(times)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.pg
@pytest.mark.rabbit
def test_rate_limit_holds_in_every_sliding_window(pg) -> None:  # type: ignore[no-untyped-def]
    c, app = pg
    with c.engine.begin() as conn:
        for sql in CLAIM_LOG:
            conn.execute(sa.text(sql))
    c.start(2, module=MODULE)
    wait_for(c.master, 10, "a master")
    ids = app.publish_many([Rated() for _ in range(30)])
    wait_for(lambda: c.counts(ids)["success"] == len(ids), 60, "every task done")
    claimed = [float(r.at) for r in c.query(
        "SELECT extract(epoch FROM at) AS at FROM claim_log ORDER BY at")]  # fmt: skip
    assert len(claimed) >= len(ids)
    assert most_in_a_window(claimed, 1.0) <= 5, claimed
    assert len(spans(c, "rated")) == len(ids)  # each ran once
    # 30 claims at 5 a second (less the slack) take about 6 s, not 4.
    assert 5.6 <= max(claimed) - min(claimed) <= 12
    assert c.scalar("SELECT rate_tat FROM topic WHERE name = :t", t=Rated.topic) is not None


@pytest.mark.pg
@pytest.mark.rabbit
def test_pause_and_resume_across_instances(pg) -> None:  # type: ignore[no-untyped-def]
    c, app = pg
    c.start(2, module=MODULE)
    wait_for(c.master, 10, "a master")
    long = app.publish(Ordered(n=0, sleep=1.5))
    wait_for(lambda: c.counts([long])["running"] == 1, 20, "the long task running")
    done = cli(c, "pause", Ordered.topic)
    assert done.returncode == 0 and f"paused {Ordered.topic}" in done.stdout, done.stderr
    ids = app.publish_many([Ordered(n=i) for i in range(1, 6)])  # publishing still works
    wait_for(lambda: c.counts([long])["success"] == 1, 20, "the running task to finish")
    stays(lambda: c.counts(ids)["pending"] == len(ids), 2.0, "a paused topic was dispatched")
    status = cli(c, "status")
    assert status.returncode == 0 and "PAUSED" in status.stdout, status.stdout
    assert admin.paused_topics(app) == {Ordered.topic}
    done = cli(c, "resume", Ordered.topic)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: c.counts(ids)["success"] == len(ids), 20, "the resumed tasks")


@pytest.mark.pg
@pytest.mark.rabbit
def test_priorities_and_unique_keys_with_a_real_instance(pg) -> None:  # type: ignore[no-untyped-def]
    c, app = pg
    admin.pause(app, Ordered.topic)
    c.start(1, module=MODULE)  # one consumer: start order is claim order
    wait_for(c.master, 10, "a master")
    low = app.publish_many([Ordered(n=i) for i in range(5)])
    high = app.publish_many([Ordered(n=10 + i) for i in range(5)], priority=9)
    keyed = app.publish(Ordered(n=99, sleep=1.0), unique_key="nightly")
    assert app.publish(Ordered(n=98), unique_key="nightly") == keyed
    admin.resume(app, Ordered.topic)
    everything = [*low, *high, keyed]
    wait_for(lambda: c.counts(everything)["success"] == len(everything), 30, "all done")
    # Higher priority first; FIFO among equals.
    assert run_order(c, "ordered", [*low, *high]) == [*high, *low]
    assert app.publish(Ordered(n=97), unique_key="nightly") != keyed  # the key is free again


def priorities_under_prefetch(c: Cluster, app: Tasker) -> None:
    """One slot, a task running in it and a low one claimed ahead of it
    (prefetch); then ten low and ten high tasks in all, published
    interleaved. Once the master has swept them (a due task needs a sweep
    to be seen), the slot frees: every high task starts before any low one
    published after the running task."""
    gate = c.tmp / "gate"
    first = app.publish(Ordered(n=0, gate=str(gate)))
    wait_for(lambda: c.counts([first])["running"] == 1, 20, "the first task running")
    sql = ("SELECT id, priority FROM task WHERE topic = :t AND status = 'pending'"
           " AND dispatched IS NOT NULL")  # fmt: skip
    low = [app.publish(Ordered(n=100))]
    wait_for(lambda: [r.id for r in c.query(sql, t=Ordered.topic)] == low, 10,
             "the first low task claimed ahead of the busy slot")  # fmt: skip
    high = [app.publish(Ordered(n=200), priority=5)]
    for i in range(1, 10):
        low.append(app.publish(Ordered(n=100 + i)))
        high.append(app.publish(Ordered(n=200 + i), priority=5))

    def swept() -> bool:  # only high tasks wait on the consumer now
        ahead = [r.priority for r in c.query(sql, t=Ordered.topic)]
        return bool(ahead) and set(ahead) == {5}

    with contextlib.suppress(AssertionError):  # not on a tree without the fix:
        wait_for(swept, 5, "the master's sweep")  # the order below says why
    gate.touch()
    everything = [first, *low, *high]
    wait_for(lambda: c.counts(everything)["success"] == len(everything), 30, "all done")
    order = run_order(c, "ordered", [*low, *high])
    assert order == [*high, *low], order


@pytest.mark.pg
@pytest.mark.rabbit
def test_priorities_hold_under_prefetch(pg) -> None:  # type: ignore[no-untyped-def]
    c, app = pg
    c.start(1, module=MODULE)
    wait_for(c.master, 10, "a master")
    priorities_under_prefetch(c, app)


def test_priorities_hold_under_prefetch_on_the_embedded_default(local) -> None:  # type: ignore[no-untyped-def]
    c, app = local
    c.start(1, module=MODULE)
    wait_for(c.master, 10, "a master")
    priorities_under_prefetch(c, app)


# --- the embedded default: SQLite and the folder broker ------------------------


def test_priority_pause_and_limit_on_the_embedded_default(local) -> None:  # type: ignore[no-untyped-def]
    c, app = local
    admin.pause(app, Ordered.topic)
    c.start(1, module=MODULE)
    wait_for(c.master, 10, "a master")
    low = app.publish_many([Ordered(n=i) for i in range(4)])
    high = app.publish_many([Ordered(n=10 + i) for i in range(4)], priority=3)
    stays(lambda: c.counts([*low, *high])["pending"] == 8, 1.5, "a paused topic was dispatched")
    admin.resume(app, Ordered.topic)
    capped = app.publish_many([Capped(sleep=0.2) for _ in range(12)])
    wait_for(lambda: c.all_terminal([*low, *high, *capped]), 30, "all done")
    assert run_order(c, "ordered", [*low, *high]) == [*high, *low]
    assert most_at_once(spans(c, "capped")) <= 3
