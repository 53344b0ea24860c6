"""Process isolation: a topic's `isolation = "process"` runs `exec` in a child.

One persistent child per execution slot runs one execution at a time; it is
killed at the timeout (the next run gets a fresh child), so a stuck C call
cannot hold a slot. It dies with its parent (PR_SET_PDEATHSIG on Linux), so
no execution outlives its instance. It ignores SIGTERM and SIGINT: a signal
to the whole process group (systemd's default `KillMode=control-group`, a
Ctrl-C in a terminal) is the instance's graceful stop, and the instance
decides when a child must die (SIGKILL at the end of the grace). Parent and
child speak JSON over a pipe; nothing is unpickled. An execution an admin
cancels is killed at once: the parent waits on the pipe in short slices
(`defaults.CANCEL_POLL_S`) and checks for the request between them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from tasker import defaults, outcome
from tasker.context import Context
from tasker.msgq import MsgQ
from tasker.runtime.execute import Started, decide, dump_decision, execute, load_decision

_PR_SET_PDEATHSIG = 1
SPAWN_TIMEOUT_S = 60.0
"""How long a child may take to import the task's module."""
DEATH_WAIT_S = 0.5
"""How long a run whose child closed the pipe waits for the child to be
reaped, to record its exit code (`os._exit(3)` reads "exit code 3")."""


def _detach_from_signals() -> None:
    # A process group of its own: the instance kills the whole group at the
    # timeout, so a process the task forked dies with it (and cannot hold
    # the pipe open, which would delay the next run on this slot).
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_main(conn: Any, module: str, qualname: str, parent: int, host: str) -> None:
    _detach_from_signals()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    conn.send_bytes(b"ready")
    while True:
        try:
            raw = conn.recv_bytes()
        except EOFError:
            return
        task = Started(**json.loads(raw))
        decision, log_text = execute(target, task, host=host)
        reply = {"decision": dump_decision(decision), "log": log_text}
        conn.send_bytes(json.dumps(reply).encode())


class ChildWorker:
    """One persistent child process running executions of one class, one at a time."""

    def __init__(self, cls: type[MsgQ], *, host: str | None = None) -> None:
        self.cls = cls
        self.host = host or ""
        self._proc: Any = None
        self._conn: Any = None

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main,
            args=(child, self.cls.__module__, self.cls.__qualname__, os.getpid(), self.host),
            name=f"tasker-child-{self.cls.topic}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        # Imports happen before the clock of the first execution starts.
        if not parent.poll(SPAWN_TIMEOUT_S) or parent.recv_bytes() != b"ready":
            self.kill()
            raise OSError(f"the child process for {self.cls.topic} did not start")

    def run(
        self, task: Started, cancelled: Callable[[], bool] = lambda: False,
        began: Callable[[], None] = lambda: None,
    ) -> tuple[outcome.Decision, str]:  # fmt: skip
        """Run in the child; kill it at the timeout, or as soon as `cancelled()`
        says an admin cancelled the task (the next run gets a new child).
        `began()` is called as the task is sent to a ready child (its run's
        start: a spawn is not). Never raises: a dead or garbled child is the
        run's failure."""
        payload = json.dumps(dataclasses.asdict(task)).encode()
        host = self.host or None
        try:
            if self._proc is None or not self._proc.is_alive():
                self._spawn()
            if cancelled():  # while the child started: it stays for the next run
                return decide(task, outcome.Ended.cancelled("exec never began"), host=host), ""
            began()
            self._conn.send_bytes(payload)
            ended = self._wait(task.timeout_s, cancelled)
            if ended != "done":
                self.kill()
                if ended == "timeout":
                    return decide(task, outcome.Ended.timed_out(task.timeout_s), host=host), ""
                how = outcome.Ended.cancelled("its process was killed")
                return decide(task, how, host=host), ""
            data = json.loads(self._conn.recv_bytes())
            return load_decision(data["decision"]), str(data["log"])
        except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
            proc = self._proc
            if proc is not None and isinstance(exc, (EOFError, OSError)):
                # The pipe closes as the child dies, a moment before it can be
                # reaped: wait that moment, so the errlog says how it ended.
                proc.join(DEATH_WAIT_S)
            code = proc.exitcode if proc is not None else None
            self.kill()
            reason = f"the execution's process died (exit code {code}): {str(exc) or 'pipe closed'}"
            return decide(task, outcome.Ended.raised(reason), host=host), ""

    def kill_now(self) -> None:
        """SIGKILL the child from another thread; the worker waiting on it sees
        the pipe close and ends the run as a failure (its job was abandoned)."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            _kill_group(proc)

    def _wait(self, timeout_s: float, cancelled: Callable[[], bool]) -> str:
        """Wait for the child's reply: "done", "timeout" or "cancelled"."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if self._conn.poll(max(0.0, min(left, defaults.CANCEL_POLL_S))):
                return "done"
            if cancelled():
                return "cancelled"
            if left <= defaults.CANCEL_POLL_S:
                return "timeout"

    def kill(self) -> None:
        """SIGKILL the child and what it forked (if any) and forget it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None and proc.is_alive():
            _kill_group(proc)
            proc.join(5)
        if conn is not None:
            conn.close()


def run(
    cls: type[MsgQ],
    task: Started,
    *,
    host: str | None,
    child: ChildWorker | None = None,
    ctx: Context | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    began: Callable[[], None] = lambda: None,
) -> tuple[outcome.Decision, str]:
    """Run one started execution, the consumer's way and `tasker.testing`'s:
    in `child` when given (process isolation, `began()` called as the ready
    child is sent the task), else `execute` in this thread with `ctx`. One
    cancelled before it began never runs; `cancelled()` says whether an
    admin asked it to stop. Returns its decision and log text
    (before the cancel rule of a request that came while it ran). Never raises.
    """
    if cancelled():
        return decide(task, outcome.Ended.cancelled("cancelled before exec began"), host=host), ""
    if child is not None:
        return child.run(task, cancelled=cancelled, began=began)
    return execute(cls, task, host=host, ctx=ctx)


def _kill_group(proc: Any) -> None:
    """SIGKILL the child's process group (itself and what it forked); the
    child alone when it has no group of its own yet (still starting)."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
            return
    except OSError:
        pass
    proc.kill()
