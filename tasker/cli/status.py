"""Cluster commands: `tasker status` and `tasker instances`."""

from __future__ import annotations

import click

from tasker import admin
from tasker.admin.glance import COUNT_CAP
from tasker.cli.output import ago
from tasker.cli.params import STATUSES
from tasker.cli.state import State, pass_state


@click.command()
@click.option(
    "--exact",
    is_flag=True,
    help=f"Count every task (a pass over the whole table); by default each topic and "
    f"status is counted up to {COUNT_CAP}, and a larger count is PostgreSQL's estimate (~).",
)
@pass_state
def status(state: State, exact: bool) -> None:
    """Master, term, instances, and task counts by topic and status."""
    s = admin.status(state.database, cap=None if exact else COUNT_CAP)
    out = state.out
    if out.json:
        out.data(s)
        return
    if s["master_instance_id"] is None:
        out.line(f"master: none (term {s['term']})")
    else:
        pid = s["master_pid"] if s["master_pid"] is not None else "?"
        live = "live" if s["lease_live"] else "EXPIRED"
        out.line(
            f"master: instance {s['master_instance_id']} on {s['master_fqdn']} (pid {pid}), "
            f"term {s['term']}, lease renewed {ago(s['lease_age_s'])} ({live})"
        )
    alive = sum(1 for i in s["instances"] if i["alive"])
    out.line(f"instances: {alive} alive of {len(s['instances'])}")
    rows = []
    paused = set(s["paused"])
    for topic in sorted(set(s["counts"]) | paused):
        by_status = s["counts"].get(topic, {})
        marks = s["count_marks"].get(topic, {})
        rows.append(
            [
                topic,
                *(f"{marks.get(st, '')}{by_status.get(st, 0)}" for st in STATUSES),
                s["oldest_due_s"].get(topic),
                "PAUSED" if topic in paused else "",
            ]
        )
    if rows:
        out.table(["topic", *STATUSES, "oldest due (s)", "paused"], rows)
    else:
        out.line("no tasks")


@click.command()
@pass_state
def instances(state: State) -> None:
    """Every instance: id, host, pid, topics, heartbeat."""
    rows = admin.instances(state.database)
    if state.out.json:
        state.out.data(rows)
        return
    state.out.table(
        ["id", "fqdn", "pid", "master", "alive", "heartbeat", "topics"],
        [
            [
                r["id"],
                r["fqdn"],
                r["pid"],
                "yes" if r["is_master"] else "",
                "yes" if r["alive"] else "no",
                ago(r["heartbeat_age_s"]),
                ",".join(sorted(r["topics"])),
            ]
            for r in rows
        ],
    )
