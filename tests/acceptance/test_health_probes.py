"""`tasker run` with TASKER_HEALTH_PORT: a healthy instance answers 200 on both
probes; with its broker gone (the TCP link to RabbitMQ cut, new connections refused) it is not ready
(/readyz 503, naming the broker) yet alive (/healthz 200) while it reconnects."""

from __future__ import annotations

import socket
import urllib.parse

import pytest

from tests.acceptance.cluster import Cluster, wait_for
from tests.integration.test_health import probe
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.acceptance, pytest.mark.pg, pytest.mark.rabbit]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probes_of_an_instance_whose_broker_goes(pg_cluster: Cluster, amqp_url: str) -> None:
    broker = urllib.parse.urlsplit(amqp_url)
    proxy = TcpProxy((broker.hostname or "127.0.0.1", broker.port or 5672))
    port = free_port()
    try:
        pg_cluster.start(
            module="tests.fixtures.ops_jobs",
            TASKER_BROKER_URL=amqp_url.replace(f":{broker.port}", f":{proxy.port}"),
            TASKER_HEALTH_PORT=str(port),
            TASKER_RECONNECT_RETRIES="1000",  # keep reconnecting for the whole test
            TASKER_RECONNECT_INTERVAL="0.5",
        )
        wait_for(lambda: probe(port, "/healthz")[0] == 200, 20, "/healthz 200")
        assert probe(port, "/readyz") == (200, {"ok": True,
                                                "checks": {"database": "ok", "broker": "ok"}})
        proxy.cut()  # RabbitMQ is gone for this instance: refused, not slow
        status, body = wait_for(lambda: (r := probe(port, "/readyz"))[0] == 503 and r,
                                30, "/readyz 503")  # fmt: skip
        assert body["checks"] == {"database": "ok", "broker": "not connected"}
        wait_for(lambda: "broker connection lost" in pg_cluster.logs(), 10, "the loss logged")
        status, body = probe(port, "/healthz")
        assert status == 200, body
        assert all(p.poll() is None for p in pg_cluster.procs)
        proxy.restore()
        wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "/readyz 200 again")
    finally:
        proxy.cut()
