"""Any `exec_after` a datetime can hold works, on both databases and through
every publish path; a non-finite or out-of-range one is refused where it is
given, with a clear error, and nothing is inserted (DESIGN 2, "Times").

The paths: `publish`, `publish_many` (a small batch, and 60 rows, which is a
COPY on PostgreSQL), `publish_raw`, `admin.publish` of an unregistered topic,
and `tasker publish --exec-after`. Each test tries every value and reports
all that went wrong at once.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Context, MsgQ, Tasker, admin
from tasker.exceptions import DatabaseError, TaskerError

UTC = dt.timezone.utc


class Later(MsgQ):
    topic = "far.later"
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return self.n


Publish = Callable[[Tasker, Any], list[int]]

PATHS: dict[str, Publish] = {
    "publish": lambda app, w: [app.publish(Later(), exec_after=w)],
    "publish_many": lambda app, w: app.publish_many([Later(n=i) for i in range(3)], exec_after=w),
    "publish_many_copy": lambda app, w: app.publish_many(
        [Later(n=i) for i in range(60)], exec_after=w
    ),
    "publish_raw": lambda app, w: [app.publish_raw(Later.topic, '{"n": 1}', exec_after=w)],
    "admin_publish": lambda app, w: [
        admin.publish(app, "far.unregistered", '{"n": 1}', exec_after=w)
    ],
}

DAY = 86400
# Relative delays: exec_after must be `created` plus this much.
DELAYS: dict[str, tuple[Any, dt.timedelta]] = {
    "30 days": (dt.timedelta(days=30), dt.timedelta(days=30)),
    "10 years": (dt.timedelta(days=3650), dt.timedelta(days=3650)),
    "30 days in int seconds": (30 * DAY, dt.timedelta(days=30)),
    "10 years in float seconds": (3650.0 * DAY, dt.timedelta(days=3650)),
    "1000 years": (dt.timedelta(days=365_000), dt.timedelta(days=365_000)),
}
PLUS_14 = dt.timezone(dt.timedelta(hours=14))
# Absolute times: exec_after must be this instant.
INSTANTS: dict[str, tuple[dt.datetime, dt.datetime]] = {
    "datetime.max": (dt.datetime.max.replace(tzinfo=UTC),) * 2,
    "datetime.min": (dt.datetime.min.replace(tzinfo=UTC),) * 2,
    "naive year 3000 (UTC)": (dt.datetime(3000, 1, 1), dt.datetime(3000, 1, 1, tzinfo=UTC)),
    "year 9999 at +14:00": (
        dt.datetime(9999, 12, 31, 23, 0, tzinfo=PLUS_14),
        dt.datetime(9999, 12, 31, 9, 0, tzinfo=UTC),
    ),
}
REFUSED: dict[str, Any] = {
    "inf": float("inf"),
    "-inf": float("-inf"),
    "nan": float("nan"),
    "1e300 seconds": 1e300,
    "-1e300 seconds": -1e300,
    "10**20 int seconds": 10**20,
    "timedelta.max": dt.timedelta.max,
    "3,000,000 days (past year 9999)": dt.timedelta(days=3_000_000),
    "UTC instant after year 9999": dt.datetime(
        9999, 12, 31, 23, 0, tzinfo=dt.timezone(-dt.timedelta(hours=12))
    ),
    "UTC instant before year 1": dt.datetime(1, 1, 1, 1, 0, tzinfo=PLUS_14),
}


@pytest.fixture
def far_app(db_url: str, local_broker: str):  # type: ignore[no-untyped-def]
    app = Tasker(db_url, broker=local_broker)
    app.register(Later)
    yield app
    app.close()


def _times(app: Tasker, ids: list[int]) -> list[tuple[dt.datetime, dt.datetime]]:
    """(exec_after, created) of each task, read back through `tasker.admin`."""
    rows = [admin.get_task(app, i) for i in ids]
    return [(r["exec_after"], r["created"]) for r in rows]


def _count(app: Tasker) -> int:
    with app.transaction() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM task")).scalar_one()


@pytest.mark.parametrize("path", list(PATHS))
def test_any_time_a_datetime_holds_works(far_app: Tasker, path: str) -> None:
    publish = PATHS[path]
    wrong: list[str] = []
    for name, (value, delay) in DELAYS.items():
        try:
            ids = publish(far_app, value)
            got = {ea - created for ea, created in _times(far_app, ids)}
        except Exception as exc:
            wrong.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if any(abs((g - delay).total_seconds()) > 1 for g in got):
            wrong.append(f"{name}: exec_after - created = {sorted(got)}, not {delay}")
    for name, (value, instant) in INSTANTS.items():
        try:
            ids = publish(far_app, value)
            got_at = {ea for ea, _ in _times(far_app, ids)}
        except Exception as exc:
            wrong.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if got_at != {instant}:
            wrong.append(f"{name}: exec_after {sorted(got_at)}, not {instant}")
    assert not wrong, f"{path} on {far_app.engine.dialect.name}:\n" + "\n".join(wrong)
    admin.list_tasks(far_app, limit=1000)  # the far times read back in a listing too
    admin.status(far_app)


@pytest.mark.parametrize("path", list(PATHS))
def test_non_finite_or_out_of_range_is_refused(far_app: Tasker, path: str) -> None:
    publish = PATHS[path]
    wrong: list[str] = []
    for name, value in REFUSED.items():
        before = _count(far_app)
        try:
            ids = publish(far_app, value)
        except (TaskerError, ValueError) as exc:
            if isinstance(exc, DatabaseError):
                wrong.append(f"{name}: refused by the database, not where given: {exc}"[:300])
            elif not str(exc).strip() or len(str(exc)) > 500:
                wrong.append(f"{name}: unclear error {str(exc)[:300]!r}")
        except Exception as exc:
            wrong.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
        else:
            wrong.append(f"{name}: accepted, exec_after {_times(far_app, ids)[:1]}")
        if _count(far_app) != before:
            wrong.append(f"{name}: {_count(far_app) - before} row(s) inserted")
    assert not wrong, f"{path} on {far_app.engine.dialect.name}:\n" + "\n".join(wrong)


def _cli(url: str, broker: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`tasker ARGS` as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=url, TASKER_BROKER_URL=broker)
    return subprocess.run(
        [sys.executable, "-m", "tasker.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


CLI_OK: dict[str, dt.timedelta | dt.datetime] = {
    "30d": dt.timedelta(days=30),
    "3650d": dt.timedelta(days=3650),
    "87600h": dt.timedelta(hours=87600),
    "9999-12-31T23:59:59+00:00": dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
}
CLI_REFUSED = ["99999999999d", "3000000d", "1000000000w", "9999-12-31T23:00:00-12:00"]


def test_cli_publish_exec_after(far_app: Tasker, db_url: str, local_broker: str) -> None:
    """`tasker publish T JSON --exec-after WHEN`: one process per value, run side by side."""
    wrong: list[str] = []
    publish = ["publish", Later.topic, '{"n": 1}', "--exec-after"]
    with ThreadPoolExecutor(4) as pool:
        runs = pool.map(lambda w: _cli(db_url, local_broker, *publish, w), CLI_OK)
        done = dict(zip(CLI_OK, runs, strict=True))
    for text, want in CLI_OK.items():
        p = done[text]
        if p.returncode != 0:
            wrong.append(f"--exec-after {text}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
            continue
        ((ea, created),) = _times(far_app, [int(p.stdout.strip())])
        if isinstance(want, dt.datetime):
            if ea != want:
                wrong.append(f"--exec-after {text}: exec_after {ea}")
        elif abs((ea - created - want).total_seconds()) > 1:
            wrong.append(f"--exec-after {text}: exec_after - created = {ea - created}")
    before = _count(far_app)
    with ThreadPoolExecutor(4) as pool:
        refused = pool.map(lambda w: _cli(db_url, local_broker, *publish, w), CLI_REFUSED)
        for text, p in zip(CLI_REFUSED, refused, strict=True):
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            if p.returncode == 0 or len(lines) != 1 or not lines[0].startswith("tasker: "):
                wrong.append(
                    f"--exec-after {text}: exit {p.returncode}, not a one-line error: "
                    f"{p.stderr[-300:]!r}"
                )
    if _count(far_app) != before:
        wrong.append(f"{_count(far_app) - before} row(s) inserted by refused values")
    assert not wrong, f"tasker publish on {far_app.engine.dialect.name}:\n" + "\n".join(wrong)
