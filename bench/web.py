"""The dashboard against 5 million tasks in PostgreSQL: every page and API call.

    python -m bench.web [--rows 5000000] [--runs 5] [--fresh]

Fills `task` (once; kept between runs unless --fresh) with one INSERT ...
SELECT over generate_series: 10 topics, created in id order over the last 7
days, --busy of them (default 1,000,000) in the last hour, 93% success, 4%
failed, the rest pending/retry/running. Then serves
the dashboard with uvicorn in this process and times each URL over HTTP:
prints `name: value unit` lines, the median of --runs requests, with the
slowest as `_max`. `snapshot_*` and `read_*` time the shared background
read the pages are served from (one per refresh interval for all viewers):
the first, the steady one, and its parts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from urllib.parse import urlencode

import sqlalchemy as sa

from bench.publish import prepare
from tasker import Tasker
from tasker.web import views

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tasker_bench_web"
PORT = 18799
TOKEN = "bench-token-0123456789"

FILL = """
INSERT INTO task (topic, status, input, result, timeout, retry, attempts, exec_after,
                  worker_fqdn, errlog, created, updated, started, finished, term)
SELECT 'topic.' || (g % 10),
       s.status,
       '{"n": ' || g || '}',
       CASE WHEN s.status = 'success' THEN '{"ok": true}' END,
       5000, CASE WHEN s.status = 'failed' THEN 0 ELSE 3 END,
       CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
       c.created,
       CASE WHEN s.status = 'pending' THEN '' ELSE 'bench-host' || chr(10) END,
       CASE WHEN s.status = 'failed'
            THEN '[attempt 1 on bench-host at 2026-11-30T00:00:00Z] RuntimeError: boom' || chr(10)
            ELSE '' END,
       c.created, c.created,
       CASE WHEN s.status <> 'pending' THEN c.created END,
       CASE WHEN s.status IN ('success', 'failed')
            THEN c.created + make_interval(secs => (g % 997) / 1000.0) END,
       1
FROM generate_series(1, :rows) AS g
CROSS JOIN LATERAL (
    SELECT CASE WHEN g <= :rows - :busy
                THEN now() - interval '7 days' * (1 - g::float8 / (:rows - :busy + 1))
                ELSE now() - interval '1 hour' * (1 - (g - :rows + :busy)::float8 / (:busy + 1))
           END AS created
) AS c
CROSS JOIN LATERAL (
    SELECT CASE WHEN g % 100 < 93 THEN 'success'
                WHEN g % 100 < 97 THEN 'failed'
                WHEN g % 100 < 98 THEN 'retry'
                WHEN g % 100 < 99 THEN 'pending'
                ELSE 'running' END AS status
) AS s
"""


def fill(app: Tasker, rows: int, busy: int, fresh: bool) -> None:
    with app.engine.begin() as conn:
        have = conn.execute(sa.text("SELECT count(*) FROM task")).scalar_one()
        recent = conn.execute(
            sa.text("SELECT count(*) FROM task WHERE created > now() - interval '2 hours'")
        ).scalar_one()
    # A run purges a few rows (older than 7 days): still the same data set.
    if abs(have - rows) <= rows // 100 and recent >= busy and not fresh:
        print(f"# reusing {have} rows", flush=True)
        return
    t0 = time.perf_counter()
    with app.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE task RESTART IDENTITY"))
        conn.execute(sa.text(FILL), {"rows": rows, "busy": busy})
    with app.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE task"))
    print(f"fill_rows: {rows} rows", flush=True)
    print(f"fill_time: {time.perf_counter() - t0:.1f} s", flush=True)


def serve(app: Tasker) -> Callable[[], None]:
    import uvicorn

    from tasker.web import server

    asgi = server.create_app(app, allow_actions=True, token=TOKEN, refresh_s=2.0)
    srv = uvicorn.Server(uvicorn.Config(asgi, port=PORT, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline:
            raise SystemExit("the dashboard did not start")
        time.sleep(0.05)

    def stop() -> None:
        srv.should_exit = True
        thread.join(10)

    return stop


def request(method: str, path: str, body: dict | None = None) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    headers = {"Authorization": f"Bearer {TOKEN}"} if method == "POST" else {}
    payload = json.dumps(body).encode() if body is not None else None
    t0 = time.perf_counter()
    conn.request(method, path, body=payload, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    ms = (time.perf_counter() - t0) * 1000
    conn.close()
    return resp.status, data, ms


def timed(name: str, runs: int, method: str, path: str, body: dict | None = None) -> None:
    times = []
    for _ in range(runs):
        status, data, ms = request(method, path, body)
        if status != 200:
            raise SystemExit(f"{name}: {method} {path} answered {status}: {data[:200]!r}")
        times.append(ms)
    print(f"{name}: {statistics.median(times):.1f} ms", flush=True)
    print(f"{name}_max: {max(times):.1f} ms", flush=True)
    if method == "POST" and b'"count"' in data:
        print(f"{name}_rows: {json.loads(data)['count']} tasks", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--busy", type=int, default=1_000_000, help="of the rows, how many the last hour holds"
    )
    p.add_argument("--fresh", action="store_true", help="refill even if the row count matches")
    args = p.parse_args()
    url = os.environ.get("TASKER_BENCH_WEB_PG", DEFAULT_URL)
    prepare(url)
    app = Tasker(url, broker="memory://")
    fill(app, args.rows, args.busy, args.fresh)
    shared_reads(app, args.runs)
    stop = serve(app)
    try:
        run_all(app, args.runs)
    finally:
        stop()
        app.close()


def shared_reads(app: Tasker, runs: int) -> None:
    """The background reads behind the pages: the first (a whole hour of
    throughput and a whole-table count), the steady one, and each part alone."""
    from tasker.web.live import Snapshots

    rates = views.Throughput()
    snaps = Snapshots(
        lambda exact: views.overview(app, exact=exact, rates=rates),
        lambda: views.exact_counts(app),
        2.0,
    )
    t0 = time.perf_counter()
    snaps.run_once()
    print(f"snapshot_first_read: {(time.perf_counter() - t0) * 1000:.1f} ms", flush=True)
    steady = []
    for _ in range(runs):
        t0 = time.perf_counter()
        snaps.run_once()
        steady.append((time.perf_counter() - t0) * 1000)
    print(f"snapshot_read: {statistics.median(steady):.1f} ms", flush=True)
    parts: dict[str, Callable[[], object]] = {
        "read_exact_counts": lambda: views.exact_counts(app),
        "read_capped_counts": lambda: views.overview(app, rates=rates),
        "read_hour_of_throughput": lambda: views.overview(app),
    }
    for name, fn in parts.items():
        times = []
        for _ in range(runs if name != "read_exact_counts" else 2):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        print(f"{name}: {statistics.median(times):.1f} ms", flush=True)


UNDO_RETRIES = """
UPDATE task SET status = 'failed', retry = 0,
       finished = coalesce(finished, created + interval '0.5 s')
WHERE topic IN ('topic.3', 'topic.4') AND status = 'pending' AND attempts = 1
"""


def run_all(app: Tasker, runs: int) -> None:
    with app.engine.begin() as conn:
        conn.execute(sa.text(UNDO_RETRIES))  # what an earlier run's bulk retry moved
        top = conn.execute(sa.text("SELECT max(id) FROM task")).scalar_one()
        failed, newest = conn.execute(
            sa.text(
                "SELECT id, created FROM task WHERE status = 'failed' AND topic = 'topic.3' "
                "ORDER BY id DESC LIMIT 1"
            )
        ).one()
        other = conn.execute(
            sa.text(
                "SELECT id FROM task WHERE status = 'failed' AND topic = 'topic.4' "
                "ORDER BY id DESC LIMIT 1"
            )
        ).scalar_one()
    # Windows that end at the newest failure, so each run retries the same sets.
    last_30s = (newest - dt.timedelta(seconds=30)).isoformat()
    last_hour = (newest - dt.timedelta(hours=1)).isoformat()
    mid = top // 2
    pages = {
        "page_overview": "/",
        "page_tasks": "/tasks",
        "page_tasks_failed": "/tasks?status=failed",
        "page_tasks_pending": "/tasks?status=pending",
        "page_tasks_topic": "/tasks?topic=topic.3",
        "page_tasks_topic_failed": "/tasks?topic=topic.3&status=failed",
        "page_tasks_since_1h": "/tasks?since=1h",
        "page_tasks_until_6d_ago": "/tasks?until=6d",
        "page_tasks_window_failed": "/tasks?since=5d&until=4d&status=failed",
        "page_tasks_before_mid": f"/tasks?before={mid}",
        "page_tasks_failed_before_mid": f"/tasks?status=failed&before={mid}",
        "page_tasks_id": f"/tasks?q={mid}",
        "page_task": f"/tasks/{failed}",
        "page_instances": "/instances",
        "page_topics": "/topics",
        "live_overview": "/live/overview",
        "live_tasks_failed": "/live/tasks?status=failed",
        "page_bulk_confirm_topic_failed_1h": "/tasks/retry?"
        + urlencode({"topic": "topic.3", "status": "failed", "since": last_hour}),
        "page_purge_confirm_7d": "/purge?older_than=7d",
        "api_status": "/api/status",
        "api_tasks": "/api/tasks",
        "api_tasks_failed_500": "/api/tasks?status=failed&limit=500",
        "api_tasks_topic_retry": "/api/tasks?topic=topic.5&status=retry",
        "api_task": f"/api/tasks/{failed}",
        "api_instances": "/api/instances",
        "api_topics": "/api/topics",
    }
    for name, path in pages.items():
        timed(name, runs, "GET", path)
    small = {"topic": "topic.3", "status": "failed", "since": last_30s}
    timed("api_bulk_retry_topic_failed_30s", 1, "POST", "/api/tasks/retry", small)
    filt = {"topic": "topic.3", "status": "failed", "since": last_hour}
    timed(
        "api_bulk_retry_dry_run_topic_failed_1h",
        runs,
        "POST",
        "/api/tasks/retry",
        {**filt, "dry_run": True},
    )
    timed("api_bulk_retry_topic_failed_1h", 1, "POST", "/api/tasks/retry", filt)
    timed("api_retry_one", 1, "POST", f"/api/tasks/{other}/retry")
    timed("api_purge_7d", 1, "POST", "/api/tasks/purge", {"older_than": "7d"})


if __name__ == "__main__":
    main()
