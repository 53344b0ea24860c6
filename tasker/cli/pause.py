"""Topic commands: `tasker pause TOPIC` and `tasker resume TOPIC`, over `tasker.admin`."""

from __future__ import annotations

import click

from tasker import admin
from tasker.cli.state import State, pass_state


@click.command()
@click.argument("topic")
@pass_state
def pause(state: State, topic: str) -> None:
    """Stop dispatching TOPIC (running tasks finish; publishing still works)."""
    admin.pause(state.app, topic)
    state.out.data({"paused": topic}) if state.out.json else state.out.line(f"paused {topic}")


@click.command()
@click.argument("topic")
@pass_state
def resume(state: State, topic: str) -> None:
    """Dispatch TOPIC again after `tasker pause`."""
    admin.resume(state.app, topic)
    state.out.data({"resumed": topic}) if state.out.json else state.out.line(f"resumed {topic}")
