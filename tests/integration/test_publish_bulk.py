"""Large batches on PostgreSQL go through COPY and must match the INSERT path row for row."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tasker import db, store
from tasker.exceptions import DatabaseError
from tasker.schema import task

N = 5000
AT = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
SPECS: list[dict[str, Any]] = [
    {},
    {"delay_s": 0},
    {"delay_s": 1.234},
    {"delay_s": 3600},
    {"delay_s": -0.5},
    {"exec_after": AT},
    {"exec_after": AT.replace(tzinfo=None)},  # naive means UTC, as on the INSERT path
    {"exec_after": AT.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))},
    {"periodic_at": AT},
]


@pytest.fixture
def engine(pg_url: str):  # type: ignore[no-untyped-def]
    e = db.make_engine(pg_url)
    yield e
    e.dispose()


def rows(n: int, topic: str = "bulk", first: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(first, first + n):
        spec = SPECS[i % len(SPECS)]
        if "periodic_at" in spec:
            spec = {"periodic_at": AT + dt.timedelta(seconds=i)}
        out.append(
            {
                "topic": topic,
                "input": json.dumps({"i": i, "s": "tab\tnl\n\\"}),
                "timeout_s": (1000 + i) / 1000,
                "retry": 1 + i % 7,
                **spec,
            }
        )
    return out


def fetch(conn: sa.Connection, ids: list[int]) -> dict[int, sa.Row[Any]]:
    found = conn.execute(sa.select(task).where(task.c.id.in_(ids)))
    return {r.id: r for r in found}


def test_large_batch_ids_in_input_order(engine) -> None:  # type: ignore[no-untyped-def]
    batch = rows(N)
    with db.transaction(engine) as conn:
        ids = store.task_insert_many(conn, rows=batch)
    assert len(ids) == N and ids == sorted(ids) and len(set(ids)) == N
    with db.transaction(engine) as conn:
        got = fetch(conn, ids)
    assert len(got) == N
    for tid, r in zip(ids, batch, strict=True):
        assert got[tid].input == r["input"]
        assert (got[tid].topic, got[tid].timeout, got[tid].retry) == (
            r["topic"],
            round(r["timeout_s"] * 1000),
            r["retry"],
        )
    # The sequence moved past the ids COPY used, so the INSERT path goes on from there.
    with db.transaction(engine) as conn:
        after = store.task_insert_many(conn, rows=rows(1))
    assert after[0] > ids[-1]


def test_copy_rows_equal_insert_rows(engine) -> None:  # type: ignore[no-untyped-def]
    """In one transaction now() is fixed, so every column but id must agree."""
    assert len(SPECS) < store.COPY_MIN_ROWS
    small = rows(len(SPECS))
    big = rows(store.COPY_MIN_ROWS * 2, first=len(SPECS))
    with db.transaction(engine) as conn:
        small_ids = store.task_insert_many(conn, rows=small)
        big_ids = store.task_insert_many(conn, rows=big)
        tx_now = store.now(conn)
        got = fetch(conn, small_ids + big_ids)

    def comparable(r: sa.Row[Any]) -> dict[str, Any]:
        d = r._asdict()
        del d["id"], d["input"], d["timeout"], d["retry"], d["periodic_at"]
        return d

    periodic = [i for i, r in enumerate(big) if r.get("periodic_at")]
    assert periodic
    for i, tid in enumerate(big_ids):
        j = (len(SPECS) + i) % len(SPECS)  # the small row built from the same spec
        want, have = got[small_ids[j]], got[tid]
        assert comparable(have) == comparable(want), (i, j)
        assert have.periodic_at == big[i].get("periodic_at")
    sample = got[big_ids[0]]
    assert sample.created == sample.updated == tx_now
    assert sample.status == "pending" and sample.attempts == 0 and sample.term == 0
    by_delay: dict[float, dt.timedelta] = {}
    for i, r in enumerate(big):
        have = got[big_ids[i]]
        if "exec_after" in r:
            assert have.exec_after == AT
        else:
            by_delay[r.get("delay_s", 0)] = have.exec_after - have.created
    assert by_delay[1.234] == dt.timedelta(milliseconds=1234)
    assert by_delay[3600] == dt.timedelta(hours=1)
    assert by_delay[-0.5] == dt.timedelta(milliseconds=-500)
    assert by_delay[0] == dt.timedelta(0)


@pytest.mark.parametrize("per_topic", [1, 3, 300], ids=["one", "small", "copy"])
def test_notifies_once_per_topic(engine, pg_url: str, per_topic: int) -> None:  # type: ignore[no-untyped-def]
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {store.PUBLISH_CHANNEL}")
        with db.transaction(engine) as conn:
            store.task_insert_many(conn, rows=rows(per_topic, "b.two") + rows(per_topic, "a.one"))
            store.task_insert_many(conn, rows=rows(1, "a.one"))
        seen = [n.payload for n in listener.notifies(timeout=1, stop_after=3)]
    assert sorted(seen) == ["a.one", "b.two"]


def test_large_batch_failure_is_a_database_error_and_inserts_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    batch = rows(200)
    batch[150]["periodic_at"] = batch[149]["periodic_at"] = AT  # uq_task_periodic
    with pytest.raises(DatabaseError, match="duplicate key"), db.transaction(engine) as conn:
        store.task_insert_many(conn, rows=batch)
    with db.transaction(engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(task)).scalar_one() == 0
