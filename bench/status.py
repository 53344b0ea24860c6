"""`tasker status` and `tasker --help` timed as a user runs them: the whole
command in a fresh process, start-up included, against 5 million tasks.

    python -m bench.status [--runs 10] [--rows 5000000] [--fresh]

Uses the database of `bench.web` (TASKER_BENCH_WEB_PG, default
`tasker_bench_web`), filled once by the same INSERT ... SELECT (10 topics,
93% success, 4% failed, the rest pending/retry/running) and analyzed. Each
command runs once to warm up (Python writes its bytecode then, as an
installed wheel has it; PYTHONDONTWRITEBYTECODE is dropped for the runs),
then `--runs` times; prints the median wall time of each as `name: value
unit` lines, and the slowest as `_max`:

- `cli.status`: `python -m tasker.cli status` (counts up to 1,000 per topic
  and status, estimates beyond);
- `cli.status_exact`: `status --exact` (a pass over the whole table);
- `cli.help`: `tasker --help`;
- `python.import_floor`: `python -c "import click, sqlalchemy, psycopg"`,
  what any command that reads the database through SQLAlchemy pays before
  its first statement, and `python.start`: `python -c pass`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.publish import prepare
from bench.web import DEFAULT_URL, fill
from tasker import Tasker

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """(median, max) wall ms of `runs` runs of `argv`, after one warm-up run."""
    subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=True, timeout=300)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=True, timeout=300)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--busy", type=int, default=1_000_000, help="rows in the last hour")
    p.add_argument("--fresh", action="store_true", help="refill even if the row count matches")
    args = p.parse_args()
    url = os.environ.get("TASKER_BENCH_WEB_PG", DEFAULT_URL)
    prepare(url)
    app = Tasker(url, broker="memory://")
    try:
        fill(app, args.rows, args.busy, args.fresh)
    finally:
        app.close()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(TASKER_DATABASE_URL=url, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))  # fmt: skip
    cli = [sys.executable, "-m", "tasker.cli"]
    floor = "import click, sqlalchemy, psycopg"
    cases = {
        "python.start": ([sys.executable, "-c", "pass"], args.runs),
        "python.import_floor": ([sys.executable, "-c", floor], args.runs),
        "cli.help": ([*cli, "--help"], args.runs),
        "cli.status": ([*cli, "status"], args.runs),
        "cli.status_exact": ([*cli, "status", "--exact"], max(1, args.runs // 3)),
    }
    for name, (argv, runs) in cases.items():
        try:
            median, worst = timed(argv, env, runs)
        except subprocess.CalledProcessError as exc:  # e.g. an older tree without --exact
            print(f"# {name}: exit {exc.returncode}: {exc.stderr.decode()[:200]}", flush=True)
            continue
        print(f"{name}: {median:.0f} ms", flush=True)
        print(f"{name}_max: {worst:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
