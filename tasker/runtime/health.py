"""Health probes of a running instance: `GET /healthz` and `GET /readyz` (Kubernetes).

`/healthz` (liveness) answers 200 while every service loop of the instance
is alive (`Service.alive`: its thread has not ended without being stopped)
and its heartbeat is current (the last beat written less than two
`instance_heartbeat`s ago); 503 otherwise. A liveness failure means
"restart me": an instance whose loop died, or whose beat is stuck, must
not keep a pod that looks Running.

`/readyz` (readiness) answers 200 when the database answers `SELECT 1`
within `READY_TIMEOUT_S` and the consumer's broker connection is up; 503
otherwise (a broker being reconnected to is not ready, yet alive).

Both answer JSON: `{"ok": bool, "checks": {name: "ok" or what is wrong}}`.
The server runs in daemon threads of its own and never touches the
instance's state beyond reading it, so a probe can neither block nor stop
the instance. The database check runs in a helper thread the probe waits
for at most `READY_TIMEOUT_S`; at most one such check is in flight, so a
database that hangs costs one connection, not one per probe.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from tasker.runtime.instance import Instance
    from tasker.runtime.service import Service

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 1.0
BEATS_OF_SLACK = 2
"""The heartbeat is current when the last beat is younger than this many heartbeats."""


def services_of(instance: Instance) -> list[Service]:
    """Every service loop of `instance` (those not started count as alive)."""
    found: list[Service | None] = [
        instance.elector, instance.consumer.intake, instance.consumer.writer,
        instance.results, instance.listener, *instance.master_services,
    ]  # fmt: skip
    return [s for s in found if s is not None]


class Checks:
    """The probes' verdicts for whatever instance `running()` returns (None: not started).

    `liveness()` and `readiness()` return `(ok, {check: "ok" or why not})`.
    """

    def __init__(self, running: Callable[[], Instance | None]) -> None:
        self.running = running
        self._db_lock = threading.Lock()  # at most one database check in flight
        self._db_answer: str | None = None

    def liveness(self) -> tuple[bool, dict[str, str]]:
        instance = self.running()
        if instance is None:
            return False, {"instance": "not started"}
        checks = {}
        for service in services_of(instance):
            checks[f"loop:{service.name}"] = "ok" if service.alive() else "thread ended"
        checks["heartbeat"] = self._heartbeat(instance)
        if instance.fatal_error is not None:
            checks["instance"] = f"stopping: {instance.fatal_error}"
        return all(v == "ok" for v in checks.values()), checks

    def _heartbeat(self, instance: Instance) -> str:
        elector = instance.elector
        beat_at = elector.beat_at
        if beat_at is None:
            return "no beat written yet"
        most = BEATS_OF_SLACK * elector.timings.instance_heartbeat_ms / 1000
        age = time.monotonic() - beat_at
        return "ok" if age <= most else f"last beat {age:.1f}s ago (more than {most:.1f}s)"

    def readiness(self) -> tuple[bool, dict[str, str]]:
        instance = self.running()
        if instance is None:
            return False, {"instance": "not started"}
        checks = {"database": self._database(instance)}
        if instance.consumer.state.lanes:
            checks["broker"] = "ok" if instance.consumer.intake.connected else "not connected"
        return all(v == "ok" for v in checks.values()), checks

    def _database(self, instance: Instance) -> str:
        if not self._db_lock.acquire(blocking=False):
            return "an earlier check has not answered yet"
        done = threading.Event()
        answer: list[str] = []

        def check() -> None:
            try:
                with instance.database.transaction() as conn:
                    conn.execute(sa.select(sa.literal(1))).scalar_one()
                answer.append("ok")
            except Exception as exc:  # any failure is the probe's answer
                answer.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
            finally:
                self._db_lock.release()
                done.set()

        threading.Thread(target=check, name="tasker-health-db", daemon=True).start()
        if not done.wait(READY_TIMEOUT_S):
            return f"no answer within {READY_TIMEOUT_S}s"
        return answer[0]


class HealthServer:
    """`/healthz` and `/readyz` over HTTP, in daemon threads (see the module)."""

    def __init__(self, checks: Checks, port: int, addr: str) -> None:
        self.checks = checks
        self.server = http.server.ThreadingHTTPServer((addr, port), _handler(checks))
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="tasker-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(checks: Checks) -> type[http.server.BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[bool, dict[str, str]]]] = {
        "/healthz": checks.liveness,
        "/readyz": checks.readiness,
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            probe = routes.get(self.path.split("?", 1)[0])
            if probe is None:
                self._answer(404, {"ok": False, "error": "try /healthz or /readyz"})
                return
            try:
                ok, found = probe()
            except Exception as exc:  # a bug of ours must read as unhealthy, not hang
                ok, found = False, {"probe": f"failed: {type(exc).__name__}: {exc}"}
            self._answer(200 if ok else 503, {"ok": ok, "checks": found})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the instance's own log

    return Handler


def start_health_server(
    running: Callable[[], Instance | None], port: int, addr: str = "127.0.0.1"
) -> HealthServer:
    """Serve the probes of the instance `running()` returns on `addr`:`port`
    (0 picks a free port: see `HealthServer.port`). Raises OSError when the
    address cannot be bound."""
    server = HealthServer(Checks(running), port, addr)
    server.start()
    log.info("health probes on http://%s:%s/healthz and /readyz", addr, server.port,
             extra={"action": "health_started"})  # fmt: skip
    return server
