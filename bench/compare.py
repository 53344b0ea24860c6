"""tasker against an earlier tasker (a git tag or commit), side by side in one sitting.

    python -m bench.compare --baseline 18de982 -- --only publish,e2e,latency --no-peers

The machines are noisy; ratios measured in one sitting hold where absolute
figures do not. So the two trees take turns: each round runs `bench.run
--runs 1 <args>` once for this tree and once for the baseline (the order
alternates round to round), each on its own database, and every figure is
the median over the rounds. The baseline is exported with `git archive`
into a temporary folder, and this tree's `bench/` is copied over its own:
the same harness measures both, only `tasker/` and `migrations/` differ.

Prints, for each figure of this tree, `name: value unit`, then
`baseline.name: value unit` and `ratio.name: value x` (this tree over the
baseline). Each round's raw lines go to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import psycopg
import sqlalchemy as sa

from bench.run import LINE, Figures, emit, render

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/tasker_bench"


def export(ref: str, into: Path) -> str:
    """The tree at `ref` in `into`, with this tree's bench/; returns the short commit."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    archive = into / "tree.tar"
    subprocess.run(["git", "archive", "-o", str(archive), sha], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    archive.unlink()
    shutil.rmtree(into / "tree" / "bench")
    shutil.copytree(ROOT / "bench", into / "tree" / "bench",
                    ignore=shutil.ignore_patterns("__pycache__", ".venv*"))  # fmt: skip
    return sha


def one_run(tree: Path, database: str, args: list[str]) -> Figures:
    """`bench.run --runs 1 <args>` in `tree` against `database`; its figures."""
    env = dict(os.environ, PYTHONPATH=str(tree), TASKER_BENCH_PG=database)
    argv = [sys.executable, "-m", "bench.run", "--runs", "1", *args]
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    sys.stderr.write(done.stdout)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bench.run failed in {tree} (exit {done.returncode})")
    figures: Figures = {}
    for line in done.stdout.splitlines():
        m = LINE.match(line.strip())
        if m:
            figures[m.group(1)] = (float(m.group(2)), m.group(3))
    return figures


def drop(url: sa.URL) -> None:
    """Drop a bench database: each tree migrates its own from scratch (one
    left by a later tree holds revisions the earlier one does not know)."""
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def median(runs: list[Figures]) -> Figures:
    out: Figures = {}
    for name, (_, unit) in runs[0].items():
        values = [r[name][0] for r in runs if name in r]
        out[name] = (statistics.median(values), unit)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="git tag or commit to compare with")
    p.add_argument("--rounds", type=int, default=3, help="each figure is the median")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: bench.run's")
    args = p.parse_args(argv)
    extra = [a for a in args.bench_args if a != "--"]
    url = sa.make_url(os.environ.get("TASKER_BENCH_PG", DEFAULT_PG))
    base_url = url.set(database=f"{url.database}_baseline")
    drop(url)
    drop(base_url)
    ours_db = url.render_as_string(hide_password=False)
    base_db = base_url.render_as_string(hide_password=False)
    with tempfile.TemporaryDirectory(prefix="tasker-baseline-") as tmp:
        sha = export(args.baseline, Path(tmp))
        base_tree = Path(tmp) / "tree"
        ours: list[Figures] = []
        theirs: list[Figures] = []
        for r in range(args.rounds):
            order = [("ours", ROOT, ours_db), ("baseline", base_tree, base_db)]
            for label, tree, database in order if r % 2 == 0 else order[::-1]:
                print(f"# round {r + 1}/{args.rounds}: {label}", file=sys.stderr, flush=True)
                (ours if label == "ours" else theirs).append(one_run(tree, database, extra))
    now, then = median(ours), median(theirs)
    print(f"# baseline: {args.baseline} ({sha}); medians of {args.rounds} alternating rounds")
    for name, (value, unit) in now.items():
        emit({name: (value, unit)})
        if name in then:
            print(render(f"baseline.{name}", *then[name]))
            if then[name][0]:
                print(render(f"ratio.{name}", value / then[name][0], "x"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
