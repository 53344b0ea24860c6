"""tasker benchmarks side by side with procrastinate and Celery.

    python -m bench.run                 # full run: median of 3 runs, N = 20000
    python -m bench.run --quick         # smoke run: 1 run, small N, no peers
    python -m bench.run --no-peers

Prints `name: value unit` lines (the convention of bench/peers/common.py),
each the median of --runs runs; per-run figures go to stderr. Real
`tasker run bench.tasks` processes are started against PostgreSQL
(TASKER_BENCH_PG) and RabbitMQ (TASKER_BENCH_BROKER), and are always
stopped at the end. bench/README.md says what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import kombu
import psycopg
import sqlalchemy as sa

from bench import publish as pub
from bench.tasks import TOPIC, Noop
from tasker import Tasker

ROOT = Path(__file__).resolve().parent.parent
DB_URL = os.environ.get("TASKER_BENCH_PG", pub.DEFAULT_URL)
BROKER_URL = os.environ.get("TASKER_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
PEERS_DIR = ROOT / "bench" / "peers"
POLL_S = 0.05  # completion polls, as the peers do
FAST_POLL_S = 0.01  # election polls
TERM_GRACE_S = 10.0
PUBLISH_BATCH = 10_000
MODULE = os.environ.get("TASKER_BENCH_MODULE", "bench.tasks")  # experiments: topic bench.noop

DIGITS = {"tasks/s": 0, "ms": 1, "MB": 1, "x": 2, "us/task": 0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- errors


class BenchError(Exception):
    """A phase failed; the message says which and why."""


@dataclass
class Deadline:
    name: str
    end: float

    @classmethod
    def after(cls, name: str, seconds: float) -> Deadline:
        return cls(name, time.monotonic() + seconds)

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise BenchError(f"{self.name}: timed out")


# --------------------------------------------------------------------------- figures


Figures = dict[str, tuple[float, str]]


def render(name: str, value: float, unit: str) -> str:
    return f"{name}: {value:.{DIGITS.get(unit, 1)}f} {unit}"


def emit(figures: Figures, stream=sys.stdout) -> None:  # type: ignore[no-untyped-def]
    for name, (value, unit) in figures.items():
        print(render(name, value, unit), file=stream, flush=True)


def median_of(runs: Sequence[Figures]) -> Figures:
    out: Figures = {}
    for name, (_, unit) in runs[0].items():
        values = [r[name][0] for r in runs if name in r]
        out[name] = (statistics.median(values), unit)
    return out


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (as bench/peers/common.py)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def repeat(runs: int, label: str, once: Callable[[], Figures]) -> Figures:
    """Median of `runs` calls of `once`; each run's figures go to stderr."""
    results = []
    for index in range(runs):
        figures = once()
        results.append(figures)
        print(f"# {label} run {index + 1}/{runs}", file=sys.stderr, flush=True)
        emit(figures, sys.stderr)
    med = median_of(results)
    emit(med)
    return med


# --------------------------------------------------------------------------- database


def conninfo() -> str:
    return sa.make_url(DB_URL).set(drivername="postgresql").render_as_string(hide_password=False)


def scalar(conn: psycopg.Connection, query: str, params: Sequence[object] = ()) -> int | None:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def reset(conn: psycopg.Connection) -> None:
    """Empty tables, free the lease, purge the topic's queue. No instance may run."""
    conn.execute("TRUNCATE task, instance RESTART IDENTITY")
    conn.execute("UPDATE core SET master_instance_id = NULL, master_fqdn = ''")
    with kombu.Connection(BROKER_URL, connect_timeout=5) as broker:
        channel = broker.channel()
        queue = kombu.Queue(
            f"tasker.{TOPIC}",
            exchange=kombu.Exchange(""),
            routing_key=f"tasker.{TOPIC}",
            durable=True,
            auto_delete=False,
        )(channel)
        queue.declare()
        queue.purge()
        channel.close()


UNFINISHED = (
    "SELECT EXISTS (SELECT 1 FROM task WHERE topic = %s AND status IN ('pending', 'retry'))"
    " OR EXISTS (SELECT 1 FROM task WHERE status = 'running')"
)


def unfinished(conn: psycopg.Connection) -> bool:
    """Whether a task is left to run: two index probes (ix_task_due,
    ix_task_running), not a count, so that polling costs the database
    next to nothing beside the work measured."""
    return bool(scalar(conn, UNFINISHED, [TOPIC]))


def master_pid(conn: psycopg.Connection) -> tuple[int | None, int | None]:
    row = conn.execute(
        "SELECT c.master_instance_id, i.pid FROM core c "
        "LEFT JOIN instance i ON i.id = c.master_instance_id WHERE c.id = 1"
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


# --------------------------------------------------------------------------- processes


class Instances:
    """`tasker run bench.tasks` processes, each in its own session; logs in a temp folder."""

    def __init__(self, label: str, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"bench-tasker-{label}-"))
        self.extra_env = env or {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.failed = False

    def start(self, count: int = 1, env: dict[str, str] | None = None) -> list[int]:
        base = dict(os.environ)
        base.update(
            TASKER_DATABASE_URL=DB_URL,
            TASKER_BROKER_URL=BROKER_URL,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        base.update(self.extra_env)
        base.update(env or {})
        pids = []
        for _ in range(count):
            index = len(self.procs)
            with open(self.log_dir / f"instance-{index}.log", "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tasker.cli", "run", MODULE],
                    cwd=ROOT,
                    env=base,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append(proc)
            pids.append(proc.pid)
        return pids

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def check_alive(self, pids: Sequence[int]) -> None:
        for p in self.procs:
            if p.pid in pids and p.poll() is not None:
                self.failed = True
                raise BenchError(
                    f"tasker run (pid {p.pid}) exited with {p.returncode}; logs in {self.log_dir}"
                )

    def wait_ready(self, conn: psycopg.Connection, pids: Sequence[int], timeout: float) -> None:
        """Until every pid has its instance row and one of them is master."""
        deadline = Deadline.after(f"start of {len(pids)} instance(s)", timeout)
        while True:
            rows = scalar(conn, "SELECT count(*) FROM instance WHERE pid = ANY(%s)", [list(pids)])
            _, mpid = master_pid(conn)
            if rows == len(pids) and mpid in pids:
                return
            self.check_alive(pids)
            deadline.check()
            time.sleep(FAST_POLL_S)

    def proc(self, pid: int) -> subprocess.Popen[bytes]:
        return next(p for p in self.procs if p.pid == pid)

    def stop(self) -> None:
        """SIGTERM every process group, wait, then SIGKILL what is left."""
        for p in self.procs:
            _killpg(p, signal.SIGTERM)
        end = time.monotonic() + TERM_GRACE_S
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, end - time.monotonic()))
        for p in self.procs:
            if p.poll() is None:
                print(f"warning: pid {p.pid} ignored SIGTERM; killed", file=sys.stderr)
            _killpg(p, signal.SIGKILL)
            p.wait()
        self.procs.clear()

    def __enter__(self) -> Instances:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.stop()
        if exc_type is None and not self.failed:
            for f in self.log_dir.iterdir():
                f.unlink()
            self.log_dir.rmdir()
        else:
            print(f"tasker logs kept in {self.log_dir}", file=sys.stderr)


def _killpg(p: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_s(pids: Sequence[int]) -> float:
    """utime + stime of these processes, in seconds (gone ones count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def pids_named(*names: str) -> list[int]:
    """Every process whose command name is one of `names` (the database and
    broker servers: their CPU per task is part of the cost, PERFORMANCE.md)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
    return found


PG_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " OR backend_type IN ('walwriter', 'checkpointer', 'background writer')"
)


class CpuMeter:
    """CPU µs per task of the instances, PostgreSQL and RabbitMQ over a window.

    PostgreSQL counts the backends of the bench database (and the WAL writer,
    checkpointer and background writer), not the server's other databases,
    so a test run elsewhere on the machine does not show here; a backend
    that appears during the window counts from zero. RabbitMQ is the whole
    node (its queues for other users are idle during a bench)."""

    def __init__(self, conn: psycopg.Connection, instances: Sequence[int]) -> None:
        self.conn = conn
        self.instances = list(instances)
        self.broker = pids_named("beam.smp")
        self.pg_start = {pid: cpu_s([pid]) for pid in self._backends()}
        self.start = {"instances": cpu_s(self.instances), "rabbitmq": cpu_s(self.broker)}

    def _backends(self) -> list[int]:
        return [int(r[0]) for r in self.conn.execute(PG_BACKENDS).fetchall()]

    def figures(self, name: str, n: int) -> Figures:
        used = {
            "instances": cpu_s(self.instances) - self.start["instances"],
            "postgres": sum(
                cpu_s([pid]) - self.pg_start.get(pid, 0.0)
                for pid in set(self._backends()) | set(self.pg_start)
            ),
            "rabbitmq": cpu_s(self.broker) - self.start["rabbitmq"],
        }
        return {f"{name}_cpu_{k}": (v * 1e6 / n, "us/task") for k, v in used.items()}


# --------------------------------------------------------------------------- phases


@dataclass
class Ctx:
    args: argparse.Namespace
    app: Tasker
    conn: psycopg.Connection
    profile_dir: Path | None = None


def publish_backlog(app: Tasker, n: int) -> None:
    for start in range(0, n, PUBLISH_BATCH):
        app.publish_many([Noop(n=i) for i in range(start, min(n, start + PUBLISH_BATCH))])


def e2e_once(ctx: Ctx, workers: int, n: int, env: dict[str, str], name: str) -> Figures:
    """N tasks published beforehand; `workers` instances started; time to all success."""
    conn = ctx.conn
    reset(conn)
    publish_backlog(ctx.app, n)
    with Instances(name, env) as inst:
        began = time.perf_counter()
        pids = inst.start(workers)
        inst.wait_ready(conn, pids, ctx.args.timeout)
        ready = time.perf_counter()
        meter = CpuMeter(conn, pids)
        profilers = start_profilers(ctx, pids, name)
        deadline = Deadline.after(name, ctx.args.timeout)
        while unfinished(conn):
            inst.check_alive(pids)
            try:
                deadline.check()
            except BenchError:
                counts = conn.execute("SELECT status, count(*) FROM task GROUP BY 1").fetchall()
                inst.failed = True
                raise BenchError(f"{name}: timed out; task counts {dict(counts)}") from None
            time.sleep(POLL_S)
        done = time.perf_counter()
        cpu = meter.figures(name, n)
        stop_profilers(profilers)
    bad = scalar(conn, "SELECT count(*) FROM task WHERE status <> 'success'")
    if bad:
        raise BenchError(f"{name}: {bad} task(s) not success")
    return {
        name: (n / (done - ready), "tasks/s"),
        f"{name}_cold": (n / (done - began), "tasks/s"),
        f"{name}_startup": ((ready - began) * 1000, "ms"),
        **cpu,
    }


def latency_once(ctx: Ctx) -> Figures:
    """One idle instance: RSS after ~3 s idle, then one publish every 10 ms."""
    conn, args = ctx.conn, ctx.args
    reset(conn)
    with Instances("latency") as inst:
        pids = inst.start(1)
        inst.wait_ready(conn, pids, args.timeout)
        time.sleep(args.idle_s)
        figures: Figures = {"tasker.rss_idle": (rss_mb(pids[0]), "MB")}
        count, interval = args.latency_tasks, args.latency_interval_ms / 1000
        origin = time.monotonic()
        for i in range(count):
            pause = origin + i * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ctx.app.publish(Noop(n=i))
        deadline = Deadline.after("tasker.latency", args.timeout)
        while (scalar(conn, "SELECT count(*) FROM task WHERE status = 'success'") or 0) < count:
            inst.check_alive(pids)
            deadline.check()
            time.sleep(POLL_S)
    rows = conn.execute(
        "SELECT extract(epoch FROM started - created) * 1000 FROM task WHERE status = 'success'"
    ).fetchall()
    lat = [float(r[0]) for r in rows]
    for pct in (50, 95, 99):
        figures[f"tasker.latency_p{pct}"] = (percentile(lat, pct), "ms")
    return figures


def wait_master(
    conn: psycopg.Connection, wanted: Callable[[int | None], bool], deadline: Deadline
) -> float:
    while True:
        mid, _ = master_pid(conn)
        if wanted(mid):
            return time.perf_counter()
        deadline.check()
        time.sleep(FAST_POLL_S)


def failover_once(ctx: Ctx) -> Figures:
    """kill -9 the master of two, then SIGTERM the master of two; time to the other."""
    conn, args = ctx.conn, ctx.args
    reset(conn)
    figures: Figures = {}
    with Instances("failover") as inst:
        pids = inst.start(2)
        inst.wait_ready(conn, pids, args.timeout)
        time.sleep(args.settle_s)  # the follower has beaten and knows the lease
        for how, sig in (("kill", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
            mid, mpid = master_pid(conn)
            assert mid is not None and mpid is not None
            (other,) = [p for p in inst.alive() if p != mpid]
            other_id = scalar(conn, "SELECT id FROM instance WHERE pid = %s", [other])
            t0 = time.perf_counter()
            os.kill(mpid, sig)
            name = f"tasker.failover_{how}"
            t1 = wait_master(conn, lambda m, o=other_id: m == o, Deadline.after(name, 60))
            figures[name] = ((t1 - t0) * 1000, "ms")
            with contextlib.suppress(subprocess.TimeoutExpired):
                inst.proc(mpid).wait(timeout=TERM_GRACE_S)
            if how == "kill":  # a new second instance for the graceful case
                (new,) = inst.start(1)
                inst.wait_ready(conn, [other, new], args.timeout)
                time.sleep(args.settle_s)
        if inst.proc(mpid).returncode != 0:
            print(
                f"warning: the SIGTERMed master exited with {inst.proc(mpid).returncode}",
                file=sys.stderr,
            )
    return figures


def publish_figures(ctx: Ctx) -> Figures:
    app, args = ctx.app, ctx.args
    single_n = min(3000, args.n)

    def single(msgs: list[pub.Bench]) -> None:
        for m in msgs:
            app.publish(m)

    def batched(msgs: list[pub.Bench]) -> None:
        for start in range(0, len(msgs), PUBLISH_BATCH):
            app.publish_many(msgs[start : start + PUBLISH_BATCH])

    figures: Figures = {}
    for name, n, fn in (("publish_single", single_n, single), ("publish_many", args.n, batched)):
        rate = pub.median_rate(app, args.runs, [pub.Bench(n=i) for i in range(n)], fn)
        figures[f"tasker.{name}"] = (rate, "tasks/s")
    pub.truncate(app)
    emit(figures)
    return figures


# --------------------------------------------------------------------------- profiling


def start_profilers(ctx: Ctx, pids: Sequence[int], name: str) -> list[subprocess.Popen[bytes]]:
    """With --profile: py-spy record every instance for the rest of the phase."""
    if ctx.profile_dir is None:
        return []
    spy = Path(sys.executable).with_name("py-spy")
    procs = []
    for pid in pids:
        out = ctx.profile_dir / f"{name}-{pid}.txt"
        rate = os.environ.get("BENCH_PYSPY_RATE", "200")  # samples/s
        argv = [str(spy), "record", "-p", str(pid), "-r", rate, "-f", "raw", "-o", str(out)]
        # BENCH_PYSPY="--gil": only the thread holding the GIL (Python's CPU).
        argv += ["--nonblocking", "--threads", *os.environ.get("BENCH_PYSPY", "").split()]
        procs.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return procs


def stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


# --------------------------------------------------------------------------- peers

LINE = re.compile(r"^([\w.]+): ([-\d.]+) (\S+)$")


def run_peer(script: str, workers: int, args: argparse.Namespace) -> Figures:
    argv = [str(PEERS_PY), str(PEERS_DIR / script), "--n", str(args.peer_n)]
    argv += ["--workers", str(workers), "--runs", str(args.runs), "--timeout", "120"]
    print(f"# {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    figures: Figures = {}
    for line in proc.stdout.splitlines():
        m = LINE.match(line.strip())
        if m:
            figures[m.group(1)] = (float(m.group(2)), m.group(3))
    if proc.returncode != 0 or not figures:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BenchError(f"{script} --workers {workers} exited {proc.returncode}: {tail}")
    return figures


def peers(ctx: Ctx, tasker_cold: dict[int, float]) -> Figures:
    args = ctx.args
    if not PEERS_PY.exists():
        raise BenchError(f"{PEERS_PY} missing: see bench/peers/README.md (or --no-peers)")
    out: Figures = {}
    scripts = (("procrastinate", "procrastinate_bench.py"), ("celery", "celery_bench.py"))
    for peer, script in scripts:
        for workers in (1, 2):
            try:
                got = run_peer(script, workers, args)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                continue
            if workers != 1:  # only the e2e figure differs with the worker count
                got = {k: v for k, v in got.items() if ".e2e_" in k}
            emit(got)
            out |= got
            e2e = got.get(f"{peer}.e2e_{workers}proc")
            if e2e and workers in tasker_cold:
                ratio = {f"ratio_e2e_vs_{peer}_{workers}w": (tasker_cold[workers] / e2e[0], "x")}
                emit(ratio)
                out |= ratio
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="tasks per e2e run")
    p.add_argument("--runs", type=int, default=3, help="each figure is the median")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run, n 2000, no peers")
    p.add_argument("--no-peers", action="store_true", help="skip procrastinate and Celery")
    p.add_argument("--peer-n", type=int, default=2000, help="tasks per peer e2e run")
    p.add_argument("--prefetch", default="default,256",
                   help="TASKER_PREFETCH values for e2e, comma-separated")  # fmt: skip
    p.add_argument("--latency-tasks", type=int, default=300)
    p.add_argument("--latency-interval-ms", type=float, default=10.0)
    p.add_argument("--idle-s", type=float, default=3.0, help="idle time before RSS")
    p.add_argument("--settle-s", type=float, default=1.0, help="before each fail-over")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per phase")
    p.add_argument("--only", default="publish,e2e,latency,failover,peers",
                   help="phases to run, comma-separated")  # fmt: skip
    p.add_argument("--profile", metavar="DIR",
                   help="py-spy record the e2e instances into DIR (slows them)")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.n, args.no_peers = 1, min(args.n, 2000), True
        args.latency_tasks, args.idle_s, args.settle_s = 100, 1.0, 0.5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    phases = set(args.only.split(","))
    try:
        pub.prepare(DB_URL)
    except Exception as exc:
        print(f"error: cannot prepare {DB_URL}: {exc}", file=sys.stderr)
        return 2
    app = Tasker(DB_URL, broker=BROKER_URL)
    app.register(Noop)
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with psycopg.connect(conninfo(), autocommit=True) as conn:
            ctx = Ctx(args, app, conn, profile_dir)
            run_phases(ctx, phases)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (psycopg.Error, OSError, kombu.exceptions.KombuError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        app.close()
    print(f"# total {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


def run_phases(ctx: Ctx, phases: set[str]) -> None:
    args = ctx.args
    if "publish" in phases:
        publish_figures(ctx)
    best: dict[int, tuple[str, float]] = {}
    cold: dict[int, float] = {}
    if "e2e" in phases:
        for prefetch in args.prefetch.split(","):
            env = {} if prefetch == "default" else {"TASKER_PREFETCH": prefetch}
            suffix = "" if prefetch == "default" else f"_prefetch{prefetch}"
            for workers in (1, 2):
                name = f"tasker.e2e_{workers}proc{suffix}"
                med = repeat(args.runs, name, lambda w=workers, e=env, nm=name: e2e_once(
                    ctx, w, args.n, e, nm))  # fmt: skip
                if med[name][0] > best.get(workers, ("", 0.0))[1]:
                    best[workers] = (prefetch, med[name][0])
        for workers, (prefetch, _) in sorted(best.items()):
            print(f"# best e2e with {workers} proc: prefetch {prefetch}", flush=True)
    if "peers" in phases and not args.no_peers:
        # Like-for-like with the peers: same N, timed from process start.
        for workers in (1, 2):
            prefetch = best.get(workers, ("default", 0.0))[0]
            env = {} if prefetch == "default" else {"TASKER_PREFETCH": prefetch}
            name = f"tasker.e2e_{workers}proc_n{args.peer_n}"
            med = repeat(args.runs, name, lambda w=workers, e=env, nm=name: e2e_once(
                ctx, w, args.peer_n, e, nm))  # fmt: skip
            cold[workers] = med[f"{name}_cold"][0]
    if "latency" in phases:
        repeat(args.runs, "latency", lambda: latency_once(ctx))
    if "failover" in phases:
        repeat(args.runs, "failover", lambda: failover_once(ctx))
    if "peers" in phases and not args.no_peers:
        try:
            peers(ctx, cold)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
