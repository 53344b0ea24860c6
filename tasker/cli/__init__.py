"""The `tasker` command: run an instance, publish, and admin work over `tasker.admin`.

Output is a rich table on a terminal, aligned plain text when piped, and
JSON with `--json`. Every error is one line on stderr and a non-zero exit
(1 for tasker errors, 2 for bad arguments); bulk changes ask first unless
`--yes`. The group lives here; each command module registers its commands
below.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import click

from tasker.cli import db as db_cmd
from tasker.cli import pause as pause_cmd
from tasker.cli import run as run_cmd
from tasker.cli import status as status_cmd
from tasker.cli import tasks as tasks_cmd
from tasker.cli.params import DURATION, WHEN, parse_duration, parse_when
from tasker.cli.state import Aborted, State
from tasker.db import with_schema_hint
from tasker.exceptions import TaskerError
from tasker.text import printable
from tasker.web import command as web_command

__all__ = ["DURATION", "WHEN", "cli", "main", "parse_duration", "parse_when"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _command in (
    run_cmd.run,
    tasks_cmd.publish,
    tasks_cmd.tasks,
    tasks_cmd.show,
    tasks_cmd.retry,
    tasks_cmd.cancel,
    tasks_cmd.purge,
    status_cmd.status,
    status_cmd.instances,
    pause_cmd.pause,
    pause_cmd.resume,
    db_cmd.db,
    web_command.web,
):
    cli.add_command(_command)


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
