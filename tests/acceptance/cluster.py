"""Real `tasker run` processes for acceptance tests, and polling with deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.waiting import wait_for

__all__ = ["Cluster", "pid_alive", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read().lower()
    except FileNotFoundError:
        return False


class Cluster:
    """Starts and kills `tasker run tests.fixtures.jobs` processes."""

    def __init__(self, db_url: str, broker_url: str, tmp: Path, **env: str) -> None:
        self.db_url = db_url
        self.broker_url = broker_url
        self.tmp = tmp
        self.effects = tmp / "effects.log"
        self.env = {
            **os.environ,
            "TASKER_DATABASE_URL": db_url,
            "TASKER_BROKER_URL": broker_url,
            "TASKER_TEST_EFFECTS": str(self.effects),
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.groups: set[int] = set()  # pids started as leaders of their own process group
        self.engine = sa.create_engine(
            db_url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
        )

    # --- processes ----------------------------------------------------------

    def start(
        self,
        n: int = 1,
        *,
        module: str = "tests.fixtures.jobs",
        new_session: bool = False,
        **env: str,
    ) -> list[int]:
        """Start `n` instances; returns their pids once each has its instance row.

        `new_session` puts each instance in its own session and process group
        (pgid = pid), as systemd does, so `signal_group` reaches it and its children.
        """
        started = []
        for _ in range(n):
            log = open(self.tmp / f"instance-{len(self.procs)}.log", "wb")  # noqa: SIM115
            p = subprocess.Popen(
                [sys.executable, "-m", "tasker.cli", "run", module],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=new_session,
            )
            log.close()
            self.procs.append(p)
            started.append(p.pid)
            if new_session:
                self.groups.add(p.pid)
        for pid in started:
            wait_for(lambda pid=pid: self.instance_of(pid), 30, f"instance row of pid {pid}")
        return started

    def signal(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def signal_group(self, pid: int, sig: int) -> None:
        """`kill -SIG -PGID` of an instance started with `new_session=True`
        (systemd's KillMode=control-group, or Ctrl-C in a terminal)."""
        assert pid in self.groups, "not started with new_session=True"
        os.killpg(pid, sig)

    def wait_exit(self, pid: int, timeout: float = 30) -> int:
        proc = next(p for p in self.procs if p.pid == pid)
        return proc.wait(timeout)

    def logs(self) -> str:
        out = []
        for i in range(len(self.procs)):
            path = self.tmp / f"instance-{i}.log"
            out.append(f"--- instance {i} (pid {self.procs[i].pid}) ---\n{path.read_text()}")
        return "\n".join(out)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with_suppress(lambda p=p: os.kill(p.pid, signal.SIGCONT))
                p.kill()
            p.wait(10)
            if p.pid in self.groups:  # leave no child of ours behind
                with_suppress(lambda p=p: os.killpg(p.pid, signal.SIGKILL))
        self.engine.dispose()

    # --- database -----------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            return conn.execute(sa.text(sql), params).all()

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def instance_of(self, pid: int) -> int | None:
        return self.scalar("SELECT id FROM instance WHERE pid = :pid", pid=pid)

    def master(self) -> tuple[int, int, int] | None:
        """(instance id, pid, term) of the current lease holder, if any."""
        row = self.query(
            "SELECT c.master_instance_id, i.pid, c.term FROM core c "
            "JOIN instance i ON i.id = c.master_instance_id WHERE c.id = 1"
        )
        return tuple(row[0]) if row else None  # type: ignore[return-value]

    def new_master(self, old: tuple[int, int, int], timeout: float) -> tuple[int, int, int]:
        """Wait for an instance other than `old` to hold the lease."""
        return wait_for(
            lambda: (m := self.master()) and m[0] != old[0] and m, timeout, "a new master"
        )

    def set_timings(self, out_of_date_ms: int, heartbeat_ms: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE core SET master_out_of_date = :o, instance_heartbeat = :h WHERE id = 1"
                ),
                {"o": out_of_date_ms, "h": heartbeat_ms},
            )

    def counts(self, ids: list[int] | None = None) -> Counter[str]:
        rows = self.query("SELECT id, status FROM task")
        wanted = set(ids) if ids is not None else None
        return Counter(r.status for r in rows if wanted is None or r.id in wanted)

    def all_terminal(self, ids: list[int]) -> bool:
        c = self.counts(ids)
        return c["success"] + c["failed"] == len(ids)

    def effects_of(self, kind: str) -> Counter[int]:
        """Task id -> how many executions recorded an effect."""
        if not self.effects.exists():
            return Counter()
        return Counter(
            int(parts[1])
            for parts in (ln.split() for ln in self.effects.read_text().splitlines())
            if parts and parts[0] == kind
        )

    def tasks_run_by(self, pid: int) -> set[int]:
        """Ids of the tasks whose execution recorded an effect in process `pid`."""
        if not self.effects.exists():
            return set()
        return {
            int(parts[1])
            for parts in (ln.split() for ln in self.effects.read_text().splitlines())
            if parts and int(parts[3]) == pid
        }

    def effect_pids(self, kind: str) -> list[int]:
        if not self.effects.exists():
            return []
        return [
            int(parts[3])
            for parts in (ln.split() for ln in self.effects.read_text().splitlines())
            if parts and parts[0] == kind
        ]


def with_suppress(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(OSError):
        fn()
