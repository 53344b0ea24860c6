"""Task commands: publish, list, show, retry, cancel and purge, over `tasker.admin`."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from tasker import admin
from tasker.cli.output import cell, id_list
from tasker.cli.params import DURATION, PRIORITY, ROWS, RUNS, STATUSES, TIMEOUT, WHEN
from tasker.cli.state import State, changed, confirm, pass_state
from tasker.exceptions import TaskerError
from tasker.text import printable


@click.command()
@click.argument("topic")
@click.argument("payload", metavar="JSON")
@click.option("--timeout", type=TIMEOUT, help="Seconds per run.")
@click.option("--retry", type=RUNS, help="Runs allowed.")
@click.option(
    "--exec-after",
    type=WHEN,
    metavar="WHEN",
    help="Not before: ISO datetime, or a delay like 30s, 5m.",
)
@click.option("--priority", type=PRIORITY, help="Higher runs first within the topic.")
@click.option("--unique-key", metavar="KEY", help="One live task per (topic, KEY).")
@click.option(
    "--on-conflict",
    type=click.Choice(["return", "raise"]),
    default="return",
    show_default=True,
    help="When KEY is held: print the live task's id, or fail.",
)
@pass_state
def publish(
    state: State,
    topic: str,
    payload: str,
    timeout: float | None,
    retry: int | None,
    exec_after: dt.datetime | dt.timedelta | None,
    priority: int | None,
    unique_key: str | None,
    on_conflict: str,
) -> None:
    """Publish one task of TOPIC with JSON input; prints its id (with
    --unique-key, the id of the live task holding KEY, if any)."""
    task_id = admin.publish(
        state.app, topic, payload, timeout=timeout, retry=retry, exec_after=exec_after,
        priority=priority, unique_key=unique_key, on_conflict=on_conflict,
    )  # fmt: skip
    state.out.data({"id": task_id}) if state.out.json else state.out.line(str(task_id))


@click.command()
@click.option("--topic")
@click.option("--status", type=click.Choice(STATUSES), multiple=True, help="Repeat for several.")
@click.option("--since", type=WHEN, help="Created at/after: ISO datetime or duration ago.")
@click.option("--until", type=WHEN, help="Created before: ISO datetime or duration ago.")
@click.option("--limit", type=ROWS, default=50, show_default=True)
@pass_state
def tasks(
    state: State, topic: str | None, status: tuple[str, ...], since: Any, until: Any, limit: int
) -> None:
    """List the newest tasks."""
    rows = admin.list_tasks(
        state.app, topic=topic, status=list(status) or None, since=since, until=until, limit=limit
    )
    if state.out.json:
        state.out.data(rows)
        return
    cols = ["id", "topic", "status", "retry", "attempts", "created", "finished", "term"]
    state.out.table(cols, [[r[c] for c in cols] for r in rows])


@click.command()
@click.argument("task_id", metavar="ID", type=int)
@pass_state
def show(state: State, task_id: int) -> None:
    """Every column of one task, with its log and error log."""
    row = admin.get_task(state.app, task_id)
    if state.out.json:
        state.out.data(row)
        return
    long = ("input", "result", "worker_fqdn", "log", "errlog")
    width = max(len(k) for k in row)
    for k, v in row.items():
        if k not in long and k != "chain_next":
            state.out.line(f"{k.ljust(width)}  {cell(v)}")
    if row.get("chain_id") is not None:
        state.out.line(f"{'chain'.ljust(width)}  {_chain_line(row)}")
    for k in long:
        text = (row.get(k) or "").rstrip("\n")
        state.out.line(f"\n{k}:" + ("" if text else " -"))
        for line in text.split("\n") if text else []:  # other controls are escaped
            state.out.line(f"  {printable(line, keep=chr(9))}")


def _chain_line(row: dict[str, Any]) -> str:
    """`step 2 of chain 17; next: b -> c` (the steps still to come)."""
    try:
        later = [str(s["topic"]) for s in json.loads(row.get("chain_next") or "[]")]
    except (ValueError, TypeError, KeyError):
        later = ["(unreadable chain_next)"]
    then = " -> ".join(map(printable, later)) if later else "none (last step)"
    return f"step {row['chain_step']} of chain {row['chain_id']}; next: {then}"


@click.command()
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@click.option(
    "--status",
    type=click.Choice(["failed", "success"]),
    multiple=True,
    help="Retry every task in this status (repeat for both).",
)
@click.option("--topic", help="With --status: only this topic.")
@click.option("--since", type=WHEN, help="With --status: finished at/after this.")
@click.option("--runs", type=RUNS, default=None, help="Runs the tasks get (default 3).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def retry(
    state: State,
    ids: tuple[int, ...],
    status: tuple[str, ...],
    topic: str | None,
    since: Any,
    runs: int | None,
    yes: bool,
) -> None:
    """Put failed (or success) tasks back to pending: by ID, or all with --status."""
    if not ids and not status:
        raise click.UsageError("give task ids or --status failed")
    if ids and (status or topic or since):
        raise click.UsageError("give task ids or --status/--topic/--since, not both")
    kw: dict[str, Any] = {"status": list(status), "topic": topic, "since": since} if status else {}
    if status or len(ids) > 1:
        confirm("retry", admin.count_retry(state.app, list(ids) or None, **kw), yes)
    moved = admin.retry(state.app, list(ids) or None, runs=runs, **kw)
    if ids and not moved:
        held = admin.retry_blocked(state.app, list(ids))
        if held:
            why = ", ".join(
                f"task {i} holds the unique key of {t}" for t, i in sorted(held.items())
            )
            raise TaskerError(f"nothing retried: {why}")
        raise TaskerError(f"nothing retried: task(s) {id_list(ids)} missing or not finished")
    changed(state, "retried", moved)


@click.command()
@click.argument("ids", metavar="ID...", nargs=-1, required=True, type=int)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def cancel(state: State, ids: tuple[int, ...], yes: bool) -> None:
    """Cancel tasks: pending/retry ones fail at once; running ones are asked to
    stop (abort) and end failed within two heartbeats. Errlog says cancelled."""
    if len(ids) > 1:
        confirm("cancel", admin.count_cancel(state.app, list(ids)), yes)
    done = admin.cancel_tasks(state.app, list(ids))
    if not done.ids:
        raise TaskerError(
            f"nothing cancelled: task(s) {id_list(ids)} missing or not pending/retry/running"
        )
    if state.out.json:
        state.out.data({"cancelled": done.cancelled, "cancel_requested": done.requested,
                        "count": len(done.ids)})  # fmt: skip
        return
    if done.cancelled or not done.requested:
        changed(state, "cancelled", done.cancelled)
    if done.requested:
        changed(state, "cancel requested (running; they stop and fail) for", done.requested)


@click.command()
@click.option("--older-than", type=DURATION, required=True, help="Finished longer ago: 7d, 12h.")
@click.option(
    "--status",
    type=click.Choice(["success", "failed"]),
    multiple=True,
    help="Which finished tasks (default success; repeat for both).",
)
@click.option(
    "--batch",
    type=ROWS,
    default=admin.PURGE_BATCH,
    show_default=True,
    help="Rows deleted per transaction.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def purge(
    state: State, older_than: dt.timedelta, status: tuple[str, ...], batch: int, yes: bool
) -> None:
    """Delete finished tasks that finished longer ago than --older-than."""
    statuses = list(status) or ["success"]
    confirm("purge", admin.count_purge(state.app, older_than, statuses), yes)
    n = admin.purge(state.app, older_than, statuses, batch=batch)
    if state.out.json:
        state.out.data({"purged": n})
    else:
        state.out.line(f"purged {n} task(s)")
