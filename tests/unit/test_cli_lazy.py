"""The CLI's command list is a table (`tasker.cli.COMMANDS`) so that `tasker
--help` imports no command module: each summary must be the one its command
would print."""

from __future__ import annotations

import importlib

import click
from click.testing import CliRunner

from tasker.cli import COMMANDS, cli


def test_every_summary_is_its_commands_own() -> None:
    for name, (module, attr, summary) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command) and command.name == name
        stand_in = click.Command(name, help=summary)
        for limit in (45, 1000):
            assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), name


def test_help_lists_every_command_and_a_command_still_runs() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    lines = result.output.split("Commands:")[1].splitlines()
    assert [line.split()[0] for line in lines if line.startswith("  ")] == sorted(COMMANDS)
    assert CliRunner().invoke(cli, ["db", "--help"]).exit_code == 0
    assert CliRunner().invoke(cli, ["nosuchcommand"]).exit_code == 2
