"""The `tasker` command: run an instance, publish, and admin work over `tasker.admin`.

Output is a rich table on a terminal, aligned plain text when piped, and
JSON with `--json`. Every error is one line on stderr and a non-zero exit
(1 for tasker errors, 2 for bad arguments); bulk changes ask first unless
`--yes`. The group lives here; each command module registers its commands
below.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Sequence

import click

from tasker.cli.params import DURATION, WHEN, parse_duration, parse_when
from tasker.cli.state import Aborted, State
from tasker.exceptions import TaskerError
from tasker.text import printable

__all__ = ["COMMANDS", "DURATION", "WHEN", "cli", "main", "parse_duration", "parse_when"]

COMMANDS = {
    "run": ("tasker.cli.run", "run",
            "Run an instance serving the MsgQ classes of MODULE (e.g. myapp.tasks)."),
    "publish": ("tasker.cli.tasks", "publish",
                "Publish one task of TOPIC with JSON input; prints its id (with\n    "
                "--unique-key, the id of the live task holding KEY, if any)."),
    "tasks": ("tasker.cli.tasks", "tasks", "List the newest tasks."),
    "show": ("tasker.cli.tasks", "show", "Every column of one task, with its log and error log."),
    "retry": ("tasker.cli.tasks", "retry",
              "Put failed (or success) tasks back to pending: by ID, or all with --status."),
    "cancel": ("tasker.cli.tasks", "cancel",
               "Cancel tasks: pending/retry ones fail at once; running ones are asked to\n    "
               "stop (abort) and end failed within two heartbeats. Errlog says cancelled."),
    "purge": ("tasker.cli.tasks", "purge",
              "Delete finished tasks that finished longer ago than --older-than."),
    "status": ("tasker.cli.status", "status",
               "Master, term, instances, and task counts by topic and status."),
    "instances": ("tasker.cli.status", "instances",
                  "Every instance: id, host, pid, topics, heartbeat."),
    "pause": ("tasker.cli.pause", "pause",
              "Stop dispatching TOPIC (running tasks finish; publishing still works)."),
    "resume": ("tasker.cli.pause", "resume", "Dispatch TOPIC again after `tasker pause`."),
    "db": ("tasker.cli.db", "db",
           "Create, upgrade or check tasker's tables (its own alembic migrations)."),
    "web": ("tasker.web.command", "web",
            "Serve the web dashboard (overview, tasks, topics, instances, JSON API)."),
}  # fmt: skip
"""name: (module, attribute, the first paragraph of its help). A command's
module is imported only when that command runs, so `tasker --help` or
`tasker status` does not import alembic, kombu or the dashboard;
tests/unit/test_cli_lazy.py checks these summaries against the commands."""


class LazyGroup(click.Group):
    """A click group whose commands (`COMMANDS`) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        module, attr, _summary = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries, importing nothing (click's own
        layout and shortening)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            # A stand-in with the same help shortens it as the command would.
            known = self.commands.get(name) or click.Command(name, help=COMMANDS[name][2])
            rows.append((name, known.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="TASKER_DATABASE_URL",
    metavar="URL",
    help="Database URL [env TASKER_DATABASE_URL; default sqlite:///tasker.db].",
)
@click.option(
    "--broker-url",
    envvar="TASKER_BROKER_URL",
    metavar="URL",
    help="kombu broker URL [env TASKER_BROKER_URL].",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON for scripts.")
@click.pass_context
def cli(
    ctx: click.Context, database_url: str | None, broker_url: str | None, as_json: bool
) -> None:
    """tasker: background tasks with the database as the source of truth."""
    state = State(database_url, broker_url, as_json)
    ctx.obj = state
    ctx.call_on_close(state.close)



def _fail(message: str, code: int = 1) -> None:
    # One line: a value the user gave or a task wrote is shown escaped, never raw.
    click.echo(f"tasker: {printable(message)}", err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI; errors are one line on stderr, never a traceback."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="tasker", standalone_mode=False
        )
    except (click.exceptions.Abort, Aborted):
        _fail("aborted: nothing changed")
    except click.ClickException as exc:
        _fail(_redacted(exc.format_message()), exc.exit_code)
    except TaskerError as exc:
        from tasker.db import with_schema_hint

        _fail(_redacted(with_schema_hint(str(exc))))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]*@")


def _redacted(text: str) -> str:
    """Hide any password of a URL that slipped into a message."""
    return _URL_PASSWORD.sub(r"\1***@", text)
