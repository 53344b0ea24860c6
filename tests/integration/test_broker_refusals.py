"""`tasker run` against a real RabbitMQ that refuses it for good (a wrong
password, a virtual host that does not exist): one clear line naming the
broker URL with its password hidden, exit 2 within seconds, no retries. A
broker that is not there (connection refused) is still retried, bounded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tasker.brokers import Broker
from tasker.exceptions import BrokerError, BrokerRefused

MODULE = """
from tasker import MsgQ

class Ping(MsgQ):
    topic = "refusal.ping"

    def exec(self, ctx, worker_id):
        return "pong"
"""

SECRET = "wr0ng-s3cret"


def with_credentials(amqp_url: str, password: str, vhost: str | None = None) -> str:
    scheme, rest = amqp_url.split("://", 1)
    host = rest.rpartition("@")[2]
    if vhost is not None:
        host = host.split("/", 1)[0] + "/" + vhost
    return f"{scheme}://guest:{password}@{host}"


def run_instance(
    sqlite_url: str, broker_url: str, tmp_path: Path, timeout: float, **extra: str
) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of `tasker run` until it exits by itself."""
    (tmp_path / "refusal_tasks.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=sqlite_url, TASKER_BROKER_URL=broker_url, **extra)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasker.cli", "run", "refusal_tasks"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=timeout)  # the deadline: it must exit by itself
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"tasker run still running after {timeout}s:\n{err}")
    return proc.returncode, err, time.monotonic() - started


def the_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if "cannot start" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def test_a_wrong_password_exits_2_at_once_naming_the_url_masked(
    sqlite_url: str, amqp_url: str, tmp_path: Path
) -> None:
    url = with_credentials(amqp_url, SECRET)
    code, err, took = run_instance(sqlite_url, url, tmp_path, timeout=30)
    assert code == 2, err
    assert took < 10, err  # the default 20 retries would take ~95 s
    line = the_error_line(err)
    assert "guest:***@127.0.0.1:5672" in line and "ACCESS_REFUSED" in line, line
    assert "check the user and password" in line, line
    assert SECRET not in err and "retrying in" not in err, err


def test_an_unknown_virtual_host_exits_2_at_once(
    sqlite_url: str, amqp_url: str, tmp_path: Path
) -> None:
    vhost = f"tasker-missing-{uuid.uuid4().hex[:8]}"
    url = with_credentials(amqp_url, "guest", vhost)
    code, err, took = run_instance(sqlite_url, url, tmp_path, timeout=30)
    assert code == 2, err
    assert took < 10, err
    line = the_error_line(err)
    assert f"guest:***@127.0.0.1:5672/{vhost}" in line and "NOT_ALLOWED" in line, line
    assert "retrying in" not in err, err


def test_a_refused_connection_is_still_retried_then_exits_2(
    sqlite_url: str, tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"amqp://guest:{SECRET}@127.0.0.1:{port}//"
    code, err, _ = run_instance(sqlite_url, url, tmp_path, timeout=60,
                                TASKER_RECONNECT_RETRIES="2",
                                TASKER_RECONNECT_INTERVAL="0.2")  # fmt: skip
    assert code == 2, err
    assert err.count("unreachable") == 2 and "retrying in" in err, err  # two retries, then up
    line = the_error_line(err)
    assert f"guest:***@127.0.0.1:{port}" in line and SECRET not in err, line


def test_a_refusal_after_the_settings_once_worked_is_retried_as_an_outage(amqp_url: str) -> None:
    broker = Broker(with_credentials(amqp_url, "guest"), reconnect_retries=1,
                    reconnect_interval_s=0.05)  # fmt: skip
    broker.connect().release()
    assert broker.accepted
    broker.url = with_credentials(amqp_url, SECRET)  # as if the password changed on the broker
    with pytest.raises(BrokerError) as err:
        broker.connect()
    assert not isinstance(err.value, BrokerRefused)  # bounded retries, as for any outage
    fresh = Broker(broker.url, reconnect_retries=5, reconnect_interval_s=5)
    started = time.monotonic()
    with pytest.raises(BrokerRefused, match="refused the login"):
        fresh.connect()
    assert time.monotonic() - started < 5
