"""What every command shares: the lazily built app, the output, and confirmation."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from tasker import defaults
from tasker.cli.output import Out


class State:
    """The group's options, handed to each command; the app is built on first use."""

    def __init__(self, database_url: str | None, broker_url: str | None, as_json: bool) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.out = Out(as_json)
        self._app: Any = None
        self._database: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from tasker.app import Tasker

            self._app = Tasker(self.database_url, broker=self.broker_url)
        return self._app

    @property
    def database(self) -> Any:
        """The database alone (`tasker.db.Database`), for commands that only
        read it: no broker and no app, so none of their imports at start-up."""
        if self._app is not None:
            return self._app.db
        if self._database is None:
            from tasker.config import ENV
            from tasker.db import Database

            url = self.database_url or os.environ.get(ENV["database_url"], "").strip()
            self._database = Database(url or defaults.DATABASE_URL)
        return self._database

    def close(self) -> None:
        if self._app is not None:
            self._app.db.dispose()
        if self._database is not None:
            self._database.dispose()


pass_state = click.make_pass_decorator(State)


class Aborted(Exception):
    """The user did not confirm: nothing changed."""


def confirm(what: str, n: int, yes: bool) -> None:
    """Say how many rows will change; go on only on --yes or a typed yes."""
    if n == 0:
        return
    if yes:
        click.echo(f"{what}: {n} task(s)", err=True)
        return
    click.echo(f"{what}: {n} task(s). Proceed? [y/N] ", err=True, nl=False)
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        if not answer or not sys.stdin.isatty():
            click.echo("", err=True)  # end the prompt line when no one typed Enter
        raise Aborted()


def changed(state: State, verb: str, ids: list[int]) -> None:
    """Report the tasks a bulk command moved: JSON, or a count and the first 20 ids."""
    if state.out.json:
        state.out.data({verb: ids, "count": len(ids)})
    else:
        shown = " ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
        state.out.line(f"{verb} {len(ids)} task(s)" + (f": {shown}" if ids else ""))
