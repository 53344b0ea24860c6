"""The service shape without I/O: `stop` never runs `on_stop` beside a pass,
`run_once` returns what it did, and reading the lease changes nothing."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from tasker.runtime.lease import Lease
from tasker.runtime.rescue import Rescued, Rescuer, RescuerConfig
from tasker.runtime.service import Pass, Service, Supervision
from tests.waiting import stays, wait_for


class Blocking(Service):
    """A pass that blocks until `release` is set; records the order of events."""

    name = "blocking"

    def __init__(self) -> None:
        self.fatal: list[str] = []
        super().__init__(Supervision(self.fatal.append, max_failures=2, retry_s=0.01))
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[str] = []
        self.stop_from_inside = False

    def run_once(self) -> Pass:
        self.events.append("pass started")
        self.entered.set()
        if self.stop_from_inside:
            self.stop()
        self.release.wait(10)
        self.events.append("pass returned")
        return Pass(0.0)

    def on_stop(self) -> None:
        self.events.append("on_stop")


def test_stop_waits_for_the_pass_in_flight_before_on_stop() -> None:
    s = Blocking()
    s.start()
    assert s.entered.wait(5)
    stopper = threading.Thread(target=s.stop, kwargs={"timeout": 10.0})
    stopper.start()
    stays(lambda: "on_stop" not in s.events and stopper.is_alive(), 0.3,
          "on_stop must wait for the pass")  # fmt: skip
    s.release.set()
    stopper.join(5)
    assert not stopper.is_alive()
    assert s.events == ["pass started", "pass returned", "on_stop"]
    s.stop()  # idempotent: on_stop once
    assert s.events.count("on_stop") == 1 and not s.fatal


def test_a_pass_outliving_the_stop_timeout_gets_on_stop_when_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Blocking()
    s.start()
    assert s.entered.wait(5)
    s.stop(timeout=0.05)  # returns although the pass still runs
    assert "on_stop" not in s.events
    assert "a pass still runs after the stop timeout" in caplog.text
    s.release.set()
    wait_for(lambda: "on_stop" in s.events, 5, "on_stop in the loop's thread")
    assert s.events == ["pass started", "pass returned", "on_stop"]


def test_stop_called_inside_a_pass_runs_on_stop_after_it() -> None:
    s = Blocking()
    s.stop_from_inside = True
    s.start()
    assert s.entered.wait(5)
    assert "on_stop" not in s.events
    s.release.set()
    wait_for(lambda: "on_stop" in s.events, 5, "on_stop after the pass")
    assert s.events == ["pass started", "pass returned", "on_stop"]


def test_stop_before_start_runs_on_stop_once() -> None:
    s = Blocking()
    s.stop()
    s.stop()
    assert s.events == ["on_stop"] and s.alive()


def test_run_once_returns_its_result_and_the_loop_waits_what_it_says() -> None:
    rescuer = Rescuer(cast(Any, None), Lease(), Supervision(lambda reason: None),
                      RescuerConfig(grace_s=5, host="h", interval_s=0.25),
                      instance_id=lambda: 1)  # fmt: skip
    assert rescuer.run_once() == Rescued(0.25, 0)  # not master: nothing to do, no database
    assert rescuer.supervised_pass() == 0.25


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reading_the_lease_has_no_side_effect_and_lapse_demotes() -> None:
    clock = Clock()
    lease = Lease(margin=0.25, clock=clock)
    lost: list[int] = []
    lease.on_lost(lost.append)
    lease.renewed(7, attempt_started=100.0, lease_ms=4000)  # trusted until 103.0
    assert lease.term() == 7 and lease.lapse() is None
    clock.now = 103.5
    assert lease.term() is None
    assert lease.term() is None and lost == []  # reads never demote
    clock.now = 102.0  # so a read did not forget the term either
    assert lease.term() == 7
    clock.now = 103.5
    assert lease.lapse() == 7 and lost == [7]
    assert lease.lapse() is None and lost == [7]
    clock.now = 102.0
    assert lease.term() is None  # demoted for good
