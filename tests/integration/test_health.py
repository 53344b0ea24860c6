"""The health probes over a real in-process instance (SQLite + folder broker):
both answer 200 while it works; a service loop whose thread ended, or a
heartbeat that stopped, turns /healthz to 503 and names the culprit."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tasker import Tasker
from tasker.runtime.health import HealthServer, start_health_server
from tests.fixtures.ops_jobs import Fine
from tests.integration.test_runtime_inprocess import make_app, wait_for  # noqa: F401


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def running(make_app: Callable[..., Tasker]) -> Iterator[tuple[Tasker, HealthServer]]:  # noqa: F811
    app = make_app(Fine)
    server = start_health_server(lambda: app.instance, 0)
    app.start()
    yield app, server
    server.close()


def end_thread_of(service: Any) -> None:
    """What a bug that escapes supervision does: the loop's thread ends
    while nobody called `stop` (the thread stays recorded, not alive)."""
    service._stopping.set()
    service.wake()
    wait_for(lambda: not service.alive(), 10, f"{service.name}'s thread to end")


def test_a_working_instance_is_alive_and_ready(running: tuple[Tasker, HealthServer]) -> None:
    app, server = running
    status, body = wait_for(lambda: (r := probe(server.port, "/healthz"))[0] == 200 and r,
                            10, "/healthz 200")  # fmt: skip
    assert body["ok"] is True and body["checks"]["heartbeat"] == "ok"
    assert {"loop:heartbeat", "loop:intake", "loop:writer", "loop:dispatch"} <= set(body["checks"])
    status, body = probe(server.port, "/readyz")
    assert (status, body) == (200, {"ok": True, "checks": {"database": "ok", "broker": "ok"}})
    assert app.result(app.publish(Fine()), timeout=20).success  # probes took nothing from it
    assert probe(server.port, "/nowhere")[0] == 404


def test_a_dead_loop_fails_liveness(running: tuple[Tasker, HealthServer]) -> None:
    app, server = running
    wait_for(lambda: probe(server.port, "/healthz")[0] == 200, 10, "/healthz 200")
    assert app.instance is not None
    end_thread_of(app.instance.consumer.writer)
    status, body = probe(server.port, "/healthz")
    # Named either as a dead loop or, once the next beat noticed, as the
    # reason the instance is stopping: both say "writer".
    assert status == 503 and body["ok"] is False
    assert "writer" in json.dumps(body["checks"])


def test_a_stopped_heartbeat_fails_liveness(running: tuple[Tasker, HealthServer]) -> None:
    app, server = running
    wait_for(lambda: probe(server.port, "/healthz")[0] == 200, 10, "/healthz 200")
    assert app.instance is not None
    end_thread_of(app.instance.elector)

    def stale() -> dict[str, Any] | None:
        status, body = probe(server.port, "/healthz")
        return body if status == 503 and body["checks"]["heartbeat"] != "ok" else None

    body = wait_for(stale, 10, "a stale heartbeat")
    assert body["checks"]["heartbeat"].startswith("last beat")
    assert body["checks"]["loop:heartbeat"] == "thread ended"
    assert probe(server.port, "/readyz")[0] == 200  # not ready is another matter


def test_no_instance_yet_is_neither(make_app: Callable[..., Tasker]) -> None:  # noqa: F811
    app = make_app(Fine)
    server = start_health_server(lambda: app.instance, 0)
    try:
        assert probe(server.port, "/healthz") == (503, {"ok": False,
                                                        "checks": {"instance": "not started"}})
        assert probe(server.port, "/readyz")[0] == 503
    finally:
        server.close()
