"""Run one execution and turn what happened into a `Decision`.

`execute` runs `exec` in the calling thread. `ChildWorker` runs it in a
persistent child process (a topic's `isolation = "process"`), which is
killed at the timeout and dies with its parent (PR_SET_PDEATHSIG on Linux),
so a stuck C call cannot hold a slot and no execution outlives its
instance. Parent and child speak JSON over a pipe; nothing is unpickled.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import importlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from tasker import outcome
from tasker.context import Context
from tasker.exceptions import PayloadError
from tasker.msgq import MsgQ

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """The row of an execution that has just moved to `running`."""

    id: int
    topic: str
    input: str
    timeout_ms: int
    retry: int
    attempts: int
    worker_id: int


def execute(cls: type[MsgQ], task: Started) -> tuple[outcome.Decision, str]:
    """Decode the input, run `exec`, decide; returns the decision and the log text."""
    ctx = Context(task.id, task.topic, task.attempts, task.worker_id)
    try:
        msg = cls.decode(task.input)
    except PayloadError as exc:
        return outcome.bad_input(attempt=task.attempts, problem=str(exc)), ""
    try:
        value = msg.exec(ctx, task.worker_id)
        if ctx.released:
            return outcome.released(
                next_at=ctx.next_at, next_delay_s=ctx.next_delay_s
            ), ctx.log_text()
        return outcome.succeeded(value), ctx.log_text()
    except Exception as exc:
        return _failure(
            task, ctx, f"{type(exc).__name__}: {exc}", _user_traceback(exc)
        ), ctx.log_text()


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the user's `exec` down, without tasker's own frame."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _failure(task: Started, ctx: Context, reason: str, detail: str) -> outcome.Decision:
    return outcome.failed(
        retry_left=task.retry,
        attempt=task.attempts,
        reason=reason,
        detail=detail,
        next_at=ctx.next_at,
        next_delay_s=ctx.next_delay_s,
    )


def timed_out(task: Started) -> outcome.Decision:
    return outcome.failed(
        retry_left=task.retry,
        attempt=task.attempts,
        reason=f"timeout: exec ran longer than {task.timeout_ms / 1000:g}s",
    )


# --- process isolation ------------------------------------------------------

_PR_SET_PDEATHSIG = 1
SPAWN_TIMEOUT_S = 60.0


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _child_main(conn: Any, module: str, qualname: str, parent: int) -> None:
    _die_with_parent()
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
        decision, text = execute(target, task)
        conn.send_bytes(json.dumps({"decision": _dump(decision), "log": text}).encode())


def _dump(d: outcome.Decision) -> dict[str, Any]:
    return {
        "transition": d.transition,
        "take": d.take,
        "err": d.err,
        "result": d.result,
        "at": d.at.isoformat() if d.at else None,
        "delay_s": d.delay_s,
    }


def _load(data: dict[str, Any]) -> outcome.Decision:
    at = dt.datetime.fromisoformat(data["at"]) if data.get("at") else None
    return outcome.Decision(
        transition=data["transition"],
        take=int(data["take"]),
        err=data["err"],
        result=data["result"],
        at=at,
        delay_s=float(data["delay_s"]),
    )


class ChildWorker:
    """One persistent child process running executions of one class, one at a time."""

    def __init__(self, cls: type[MsgQ]) -> None:
        self.cls = cls
        self._proc: Any = None
        self._conn: Any = None

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main,
            args=(child, self.cls.__module__, self.cls.__qualname__, os.getpid()),
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

    def run(self, task: Started) -> tuple[outcome.Decision, str]:
        """Run in the child; kill it at the timeout (the next run gets a new child)."""
        payload = json.dumps(task.__dict__).encode()
        try:
            if self._proc is None or not self._proc.is_alive():
                self._spawn()
            self._conn.send_bytes(payload)
            if not self._conn.poll(task.timeout_ms / 1000):
                self.kill()
                return timed_out(task), ""
            data = json.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            self.kill()
            reason = f"the execution's process died (exit code {code}): {exc or 'pipe closed'}"
            return outcome.failed(retry_left=task.retry, attempt=task.attempts, reason=reason), ""
        return _load(data["decision"]), data["log"]

    def kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()
