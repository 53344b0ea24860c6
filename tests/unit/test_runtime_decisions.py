"""Pure functions of the runtime: packing, capacity, lease timing, rescue
decisions, ack ordering and one execution turned into a decision."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from tasker import defaults
from tasker.context import Context
from tasker.msgq import MsgQ
from tasker.runtime.consumer.acks import AckTracker
from tasker.runtime.dispatch import capacity_of, pack
from tasker.runtime.election import Timings, next_beat_s
from tasker.runtime.execute import Started, execute
from tasker.runtime.lease import trust_deadline
from tasker.runtime.rescue import decide
from tasker.store.finish import Finish, finish_row

# --- dispatch.pack ------------------------------------------------------------


def pairs(n: int) -> list[tuple[int, int]]:
    return [(i, 1000 + i) for i in range(1, n + 1)]


def flat(messages: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    return [p for m in messages for p in m]


def test_pack_nothing() -> None:
    assert pack([], slots=4, concurrency=4, backlog=False) == []
    assert pack([], slots=4, concurrency=4, backlog=True) == []


@pytest.mark.parametrize("n", [1, 3, 4])
def test_pack_idle_is_one_task_per_message(n: int) -> None:
    got = pack(pairs(n), slots=4, concurrency=4, backlog=False)
    assert [len(m) for m in got] == [1] * n
    assert flat(got) == pairs(n)


def test_pack_idle_with_zero_slots_still_one_per_message_for_one_task() -> None:
    assert pack(pairs(1), slots=0, concurrency=1, backlog=False) == [pairs(1)]


def test_pack_spreads_over_slots_when_more_tasks_than_slots() -> None:
    got = pack(pairs(10), slots=4, concurrency=4, backlog=False)
    sizes = [len(m) for m in got]
    assert all(1 <= s <= 4 for s in sizes)
    assert len(got) < 10  # packed, not one per message
    assert max(sizes) == 3  # ceil(10 / 4)
    assert flat(got) == pairs(10)


def test_pack_spread_never_exceeds_concurrency() -> None:
    got = pack(pairs(100), slots=2, concurrency=3, backlog=False)
    assert max(len(m) for m in got) == 3
    assert flat(got) == pairs(100)


@pytest.mark.parametrize(("n", "conc"), [(7, 3), (9, 3), (1, 5), (20, 8)])
def test_pack_backlog_up_to_concurrency(n: int, conc: int) -> None:
    got = pack(pairs(n), slots=conc * 2, concurrency=conc, backlog=True)
    assert all(len(m) == conc for m in got[:-1])
    assert 1 <= len(got[-1]) <= conc
    assert len(got) == -(-n // conc)
    assert flat(got) == pairs(n)


@pytest.mark.parametrize("backlog", [True, False])
def test_pack_never_above_max_tasks_per_message(backlog: bool) -> None:
    cap = defaults.MAX_TASKS_PER_MESSAGE
    n = cap * 3 + 5
    got = pack(pairs(n), slots=1, concurrency=cap * 10, backlog=backlog)
    assert max(len(m) for m in got) == cap
    assert flat(got) == pairs(n)
    assert len(set(flat(got))) == n  # every pair exactly once


# --- dispatch.capacity_of -----------------------------------------------------


def inst(topics: dict[str, dict[str, int]] | str) -> SimpleNamespace:
    return SimpleNamespace(topics=topics if isinstance(topics, str) else json.dumps(topics))


def test_capacity_sums_concurrency_and_prefetch_over_instances() -> None:
    rows = [
        inst('{"t":{"concurrency":4,"prefetch":4}}'),
        inst({"t": {"concurrency": 2, "prefetch": 1}, "u": {"concurrency": 9, "prefetch": 9}}),
        inst({"u": {"concurrency": 3, "prefetch": 3}}),
    ]
    cap = capacity_of("t", rows)
    assert (cap.slots, cap.limit, cap.concurrency) == (6, 11, 4)
    u = capacity_of("u", rows)
    assert (u.slots, u.limit, u.concurrency) == (12, 24, 9)


def test_capacity_of_unknown_topic_or_no_instances_is_zero() -> None:
    assert capacity_of("nope", [inst({"t": {"concurrency": 1, "prefetch": 1}})]).limit == 0
    assert capacity_of("t", []).slots == 0
    assert capacity_of("t", [inst("{}"), inst("")]).limit == 0


def test_capacity_prefetch_defaults_to_concurrency() -> None:
    cap = capacity_of("t", [inst({"t": {"concurrency": 5}})])
    assert (cap.slots, cap.limit) == (5, 10)


# --- election timing ------------------------------------------------------------


def test_trust_deadline_is_lease_minus_margin_from_attempt_start() -> None:
    assert trust_deadline(100.0, 6000, 0.25) == pytest.approx(104.5)
    assert trust_deadline(0.0, 1000, 0.0) == pytest.approx(1.0)
    # Always strictly before the lease could expire when there is a margin.
    assert trust_deadline(50.0, 6000, defaults.LEASE_SAFETY_MARGIN) < 56.0


@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 0.999999])
def test_next_beat_jitter_within_ten_percent(r: float) -> None:
    t = Timings(master_out_of_date_ms=6000, instance_heartbeat_ms=3000)
    d = next_beat_s(t, lease_expires_in_s=None, rand=lambda: r)
    assert 2.7 - 1e-9 <= d <= 3.3 + 1e-9


def test_next_beat_jitter_actually_varies() -> None:
    t = Timings(6000, 3000)
    low = next_beat_s(t, lease_expires_in_s=None, rand=lambda: 0.0)
    high = next_beat_s(t, lease_expires_in_s=None, rand=lambda: 1.0)
    assert low == pytest.approx(2.7)
    assert high == pytest.approx(3.3)


def test_follower_beats_sooner_when_lease_expires_sooner() -> None:
    t = Timings(6000, 3000)
    normal = next_beat_s(t, lease_expires_in_s=None, rand=lambda: 0.5)
    soon = next_beat_s(t, lease_expires_in_s=0.5, rand=lambda: 0.5)
    assert soon < normal
    assert 0.5 <= soon <= 0.6  # just after the lease expires
    expired = next_beat_s(t, lease_expires_in_s=-2.0, rand=lambda: 0.5)
    assert 0 < expired <= 0.05
    later = next_beat_s(t, lease_expires_in_s=60.0, rand=lambda: 0.5)
    assert later == pytest.approx(normal)


# --- rescue.decide --------------------------------------------------------------


def stuck(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "id": 7,
        "worker_id": 99,
        "retry": 3,
        "attempts": 1,
        "instance_id": 42,
        "overdue": True,
        "cancel_requested": None,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def test_rescue_overdue_row_retries_with_timeout_reason() -> None:
    d = decide(stuck(overdue=True), grace_s=5.0, out_of_date_ms=6000)
    assert d.transition == "retry"
    assert d.take == 1
    assert "timeout" in d.err
    assert "[attempt 1 on " in d.err
    assert d.delay_s > 0


def test_rescue_orphan_row_names_the_instance() -> None:
    d = decide(stuck(overdue=False, instance_id=4242), grace_s=5.0, out_of_date_ms=6000)
    assert d.transition == "retry"
    assert "instance 4242" in d.err
    assert "6000" in d.err
    assert "timeout" not in d.err


def test_rescue_last_run_fails() -> None:
    for overdue in (True, False):
        d = decide(stuck(overdue=overdue, retry=1), grace_s=5.0, out_of_date_ms=6000)
        assert (d.transition, d.take) == ("fail", 1)


def test_rescue_of_a_cancelled_row_fails_it_without_retry() -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for overdue in (True, False):
        d = decide(stuck(overdue=overdue, cancel_requested=at), grace_s=5.0, out_of_date_ms=6000)
        assert (d.transition, d.take) == ("fail", 0)
        assert "cancelled" in d.err and "master" in d.err
        assert "timeout" not in d.err


def test_rescue_row_is_guarded_by_worker_id() -> None:
    d = decide(stuck(), grace_s=1.0, out_of_date_ms=6000)
    r = finish_row(Finish(7, 99, d))
    assert (r["tid"], r["wid"], r["take"]) == (7, 99, 1)


# --- consumer.AckTracker ---------------------------------------------------------


def test_ack_tracker_in_order_is_one_multiple_ack() -> None:
    t = AckTracker()
    for tag in (1, 2, 3):
        t.delivered(tag)
    assert t.written([1, 2]) == [(2, True)]
    assert t.written([3]) == [(3, True)]
    assert t.pending() == 0


def test_ack_tracker_out_of_order_is_acked_at_once() -> None:
    """A long task's message (1) must not hold back the acks of later ones."""
    t = AckTracker()
    for tag in (1, 2, 3, 4):
        t.delivered(tag)
    assert t.written([3]) == [(3, False)]
    assert t.written([2]) == [(2, False)]
    assert t.pending() == 2
    # 1 written: the prefix 1..3 goes, acked by naming 1 (2 and 3 already were:
    # RabbitMQ refuses a multiple ack naming a tag it no longer holds).
    assert t.written([1]) == [(1, True)]
    assert t.written([4]) == [(4, True)]
    assert t.pending() == 0 and not t.acked and not t.order


def test_ack_tracker_mixed_batch() -> None:
    t = AckTracker()
    for tag in range(1, 6):
        t.delivered(tag)
    assert t.written([1, 2, 4]) == [(2, True), (4, False)]
    assert t.written([3, 5]) == [(5, True)]
    assert t.pending() == 0


# --- execute.execute -------------------------------------------------------------


class Ok(MsgQ):
    topic = "svc.ok"
    x: int = 1

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.log(f"got {self.x}")
        return {"double": self.x * 2, "worker": worker_id}


class Boom(MsgQ):
    topic = "svc.boom"

    def exec(self, ctx: Context, worker_id: int) -> object:
        raise ValueError("kaboom")


class Release(MsgQ):
    topic = "svc.release"

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.release(2.5)
        return None


AT = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


class Later(MsgQ):
    topic = "svc.later"
    absolute: bool = False

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.exec_after(AT if self.absolute else 42.0)
        raise RuntimeError("try later")


class NotJson(MsgQ):
    topic = "svc.notjson"

    def exec(self, ctx: Context, worker_id: int) -> object:
        return object()


def started(cls: type[MsgQ], text: str = "{}", retry: int = 3) -> Started:
    return Started(
        id=11, topic=cls.topic, input=text, timeout_ms=5000, retry=retry, attempts=1, worker_id=77
    )


def test_execute_success_stores_json_result_and_log() -> None:
    d, text = execute(Ok, started(Ok, '{"x": 21}'))
    assert d.transition == "succeed"
    assert d.take == 0
    assert json.loads(d.result or "null") == {"double": 42, "worker": 77}
    assert "got 21" in text


def test_execute_exception_retries_with_user_traceback_only() -> None:
    d, _ = execute(Boom, started(Boom))
    assert d.transition == "retry"
    assert d.take == 1
    assert "ValueError: kaboom" in d.err
    assert "Traceback" in d.err
    assert "test_runtime_decisions.py" in d.err  # the user's frame is there
    assert "tasker/execute.py" not in d.err
    assert d.delay_s > 0


def test_execute_exception_on_last_run_fails() -> None:
    d, _ = execute(Boom, started(Boom, retry=1))
    assert (d.transition, d.take) == ("fail", 1)


@pytest.mark.parametrize("text", ['{"x": "not an int"}', '{"y": 1}', "not json", "[1, 2]"])
def test_execute_bad_input_fails_without_charging(text: str) -> None:
    d, _ = execute(Ok, started(Ok, text))
    assert (d.transition, d.take) == ("fail", 0)
    assert "bad input" in d.err


def test_execute_release_hands_back() -> None:
    d, _ = execute(Release, started(Release))
    assert d.transition == "hand_back"
    assert d.take == 0
    assert d.delay_s == pytest.approx(2.5)
    assert d.err == ""


def test_execute_exec_after_delay_is_respected() -> None:
    d, _ = execute(Later, started(Later, '{"absolute": false}'))
    assert d.transition == "retry"
    assert d.delay_s == pytest.approx(42.0)
    assert d.at is None


def test_execute_exec_after_absolute_is_respected() -> None:
    d, _ = execute(Later, started(Later, '{"absolute": true}'))
    assert d.transition == "retry"
    assert d.at == AT


def test_execute_non_json_result_is_a_failure() -> None:
    d, _ = execute(NotJson, started(NotJson))
    assert d.transition == "retry"
    assert d.take == 1
    assert d.result is None
    assert "JSON" in d.err


@pytest.mark.parametrize(
    "topics", ["not json", "[1, 2]", '{"t": "x"}', '{"t": {"concurrency": "2"}}', "null"]
)
def test_a_damaged_instance_row_serves_nothing(topics: str) -> None:
    row = SimpleNamespace(topics=topics)
    assert capacity_of("t", [row]) == capacity_of("t", [])


@pytest.mark.parametrize(
    ("n", "conc", "soon", "consumers"), [(500, 8, 264, 2), (20, 8, 264, 2), (7, 3, 6, 1)]
)
def test_pack_backlog_spreads_up_to_what_a_consumer_starts_soon(
    n: int, conc: int, soon: int, consumers: int
) -> None:
    got = pack(pairs(n), slots=conc * consumers, concurrency=conc, backlog=True,
               soon=soon, consumers=consumers)  # fmt: skip
    size = max(conc, min(-(-n // consumers), soon, defaults.MAX_TASKS_PER_MESSAGE))
    assert all(len(m) == size for m in got[:-1])
    assert max(len(m) for m in got) <= max(conc, min(soon, defaults.MAX_TASKS_PER_MESSAGE))
    assert len(got) >= min(consumers, -(-n // conc))  # every consumer gets a message
    assert flat(got) == pairs(n)


def test_capacity_soon_is_the_smallest_consumer_and_counts_consumers() -> None:
    rows = [
        inst({"t": {"concurrency": 4, "prefetch": 60}}),
        inst({"t": {"concurrency": 2, "prefetch": 10}}),
    ]
    cap = capacity_of("t", rows)
    assert (cap.soon, cap.consumers) == (12, 2)
