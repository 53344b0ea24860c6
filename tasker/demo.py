"""`make demo`: two real instances on the embedded default, tasks moving through their states.

Everything lives in ./demo-run (a SQLite file and a broker folder); nothing
to install or start. Run with `python -m tasker.demo`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tasker import Context, MsgQ, Tasker, provision


class Greet(MsgQ):
    """Succeeds after a short pause."""

    topic = "demo.greet"
    concurrency = 2
    spec = 0.5
    name: str

    def exec(self, ctx: Context, worker_id: int) -> object:
        time.sleep(random.uniform(0.2, 0.8))
        ctx.log(f"said hello to {self.name}")
        return {"greeting": f"hello, {self.name}"}


class Flaky(MsgQ):
    """Fails on its first run, succeeds on the second."""

    topic = "demo.flaky"
    retry = 3
    spec = 0.5
    n: int

    def exec(self, ctx: Context, worker_id: int) -> object:
        if ctx.attempt == 1:
            ctx.exec_after(1.0)  # retry in a second instead of the default back-off
            raise RuntimeError("the first run always fails")
        return {"n": self.n, "attempt": ctx.attempt}


class Doomed(MsgQ):
    """Fails every run: ends `failed` once its runs are used up."""

    topic = "demo.doomed"
    retry = 2
    spec = 0.5

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.exec_after(0.5)
        raise ValueError("this task cannot succeed")


def _history(app: Tasker, ids: list[int]) -> Table:
    table = Table(title="task history")
    for col in ("id", "topic", "status", "runs", "retry left", "host", "result / last error"):
        table.add_column(col)
    with app.transaction() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, topic, status, attempts, retry, worker_fqdn, result, errlog "
            "FROM task ORDER BY id"
        ).all()
    for r in rows:
        if r.id not in ids:
            continue
        errors = [ln for ln in (r.errlog or "").splitlines() if ln.startswith("[attempt")]
        detail = r.result or (errors[-1].split("] ", 1)[-1][:60] if errors else "")
        host = (r.worker_fqdn or "").strip().splitlines()
        table.add_row(
            str(r.id),
            r.topic,
            r.status,
            str(r.attempts),
            str(r.retry),
            host[-1] if host else "",
            detail,
        )
    return table


def _counts(app: Tasker, ids: list[int]) -> dict[str, int]:
    with app.transaction() as conn:
        rows = conn.exec_driver_sql("SELECT id, status FROM task").all()
    counts: dict[str, int] = {}
    for r in rows:
        if r.id in ids:
            counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def main() -> int:
    console = Console(width=max(110, shutil.get_terminal_size().columns))
    root = Path("demo-run").resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    env = {
        **os.environ,
        "TASKER_DATABASE_URL": f"sqlite:///{root / 'tasker.db'}",
        "TASKER_BROKER_URL": f"filesystem://{root / 'broker'}",
        "TASKER_SHUTDOWN_GRACE": "5",
    }
    os.environ.update(env)
    console.print(f"[bold]1.[/] provisioning {env['TASKER_DATABASE_URL']}: tasker db upgrade")
    provision.upgrade(provision.config(env["TASKER_DATABASE_URL"]))
    console.print("[bold]2.[/] starting two instances: tasker run tasker.demo")
    logs = [open(root / f"instance-{i}.log", "w") for i in (1, 2)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tasker.cli", "run", "tasker.demo"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),  # where `python -m tasker.demo` found tasker
        )
        for log in logs
    ]
    app = Tasker()
    try:
        console.print("[bold]3.[/] publishing 8 greetings, 2 flaky tasks and 1 doomed task")
        ids = app.publish_many(
            [
                Greet(name=n)
                for n in ("ada", "alan", "grace", "edsger", "barbara", "ken", "dennis", "linus")
            ]
        )
        ids += app.publish_many([Flaky(n=1), Flaky(n=2)])
        ids.append(app.publish(Doomed()))
        deadline = time.monotonic() + 60
        last = None
        while time.monotonic() < deadline:
            counts = _counts(app, ids)
            line = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            if line != last:
                console.print(f"    {time.strftime('%H:%M:%S')}  {line}")
                last = line
            if counts.get("success", 0) + counts.get("failed", 0) == len(ids):
                break
            time.sleep(0.1)
        console.print(_history(app, ids))
        console.print(f"instance logs: {root}/instance-*.log; the database: {root / 'tasker.db'}")
    finally:
        console.print("[bold]4.[/] stopping the instances (SIGTERM: graceful)")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        for log in logs:
            log.close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
