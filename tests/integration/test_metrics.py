"""Two instances export metrics: the cluster-wide database gauges come from the
master alone, so a Prometheus `sum` over instances counts each queue once; the
exporter listens on loopback unless told otherwise."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

from tasker import Context, MsgQ, Tasker
from tasker.metrics import DEFAULT_ADDR, start_exporter
from tests.integration.test_runtime_inprocess import make_app, wait_for  # noqa: F401


class Parked(MsgQ):
    topic = "m.parked"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def scrape(port: int | None) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def test_only_the_master_exports_database_gauges(make_app: Callable[..., Tasker]) -> None:  # noqa: F811
    a, b = make_app(Parked), make_app(Parked)
    a.publish(Parked(), exec_after=3600)  # due in an hour: stays pending
    ra = a.start()
    wait_for(lambda: ra.is_master, what="first app elected")
    rb = b.start()
    ma, mb = start_exporter(a, 0), start_exporter(b, 0)
    try:
        assert ma.server.server_address[0] == DEFAULT_ADDR == "127.0.0.1"
        master, follower = scrape(ma.port), scrape(mb.port)
        assert 'tasker_queue_depth{status="pending",topic="m.parked"} 1.0' in master
        assert "tasker_database_up 1.0" in master
        assert "do not sum across instances" in master
        assert "tasker_is_master 1.0" in master
        assert not rb.is_master
        assert "tasker_queue_depth" not in follower
        assert "tasker_oldest_due_seconds" not in follower
        assert "tasker_is_master 0.0" in follower

        ra.stop()  # fail-over: the gauges move to the new master
        wait_for(lambda: rb.is_master, what="second app elected")
        assert 'tasker_queue_depth{status="pending",topic="m.parked"} 1.0' in scrape(mb.port)
    finally:
        ma.close()
        mb.close()


def test_the_decision_can_be_given(make_app: Callable[..., Tasker]) -> None:  # noqa: F811
    app = make_app(Parked)
    app.publish(Parked(), exec_after=3600)
    never, always = (
        start_exporter(app, 0, db_gauges=lambda: False),
        start_exporter(make_app(Parked), 0, db_gauges=lambda: True),
    )
    try:
        assert "tasker_queue_depth" not in scrape(never.port)
        assert 'tasker_queue_depth{status="pending",topic="m.parked"} 1.0' in scrape(always.port)
    finally:
        never.close()
        always.close()


def test_process_metrics_are_exported(make_app: Callable[..., Tasker]) -> None:  # noqa: F811
    """Memory, open files, CPU and GC of the process: the README promises flat
    memory over months, and this is how an operator checks it."""
    m = start_exporter(make_app(Parked), 0, db_gauges=lambda: False)
    try:
        text = scrape(m.port)
        rss = "process_resident_memory_bytes "
        resident = [ln for ln in text.splitlines() if ln.startswith(rss)]
        assert resident and float(resident[0].split()[1]) > 1_000_000
        assert 'python_gc_objects_collected_total{generation="0"}' in text
        assert "python_info{" in text
    finally:
        m.close()
