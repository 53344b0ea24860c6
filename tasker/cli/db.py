"""`tasker db`: provision the schema with the migrations shipped inside tasker.

alembic's own command API (`tasker.provision`) on the packaged migrations;
the database is `--database-url` or TASKER_DATABASE_URL, as for every
other command.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import click

from tasker import provision
from tasker.cli.state import Aborted, State, pass_state


@click.group()
def db() -> None:
    """Create, upgrade or check tasker's tables (its own alembic migrations)."""


@contextlib.contextmanager
def _progress() -> Iterator[None]:
    """alembic's `Running upgrade 0001 -> 0002` lines on stderr while a command runs."""
    logger = logging.getLogger("alembic.runtime.migration")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: record.getMessage().startswith("Running "))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _report(state: State, info: dict[str, object]) -> None:
    if state.out.json:
        state.out.data(info)
        return
    current = ", ".join(info["current"]) or "none"  # type: ignore[arg-type]
    heads = ", ".join(info["heads"])  # type: ignore[arg-type]
    where = "(head)" if info["at_head"] else f"(tasker's head is {heads})"
    state.out.line(f"database at {current} {where}")


@db.command()
@click.argument("revision", default="heads", metavar="[REV]")
@pass_state
def upgrade(state: State, revision: str) -> None:
    """Upgrade to REV (default: the newest); creates the tables on a new database."""
    cfg = provision.config(state.database_url)
    with _progress():
        provision.upgrade(cfg, revision)
    _report(state, provision.current(cfg))


@db.command()
@click.argument("revision", metavar="REV")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def downgrade(state: State, revision: str, yes: bool) -> None:
    """Downgrade to REV (`base` drops tasker's tables and every task in them)."""
    cfg = provision.config(state.database_url)
    if not yes:
        click.echo(f"downgrade the database to {revision}? [y/N] ", err=True, nl=False)
        answer = sys.stdin.readline()
        if answer.strip().lower() not in ("y", "yes"):
            if not answer or not sys.stdin.isatty():
                click.echo("", err=True)
            raise Aborted()
    with _progress():
        provision.downgrade(cfg, revision)
    _report(state, provision.current(cfg))


@db.command()
@pass_state
def current(state: State) -> None:
    """The database's revision and whether it is tasker's newest."""
    _report(state, provision.current(provision.config(state.database_url)))


@db.command()
@pass_state
def check(state: State) -> None:
    """Fail unless the database is at the newest revision and matches tasker's models."""
    cfg = provision.config(state.database_url)
    provision.check(cfg)
    info = provision.current(cfg)
    if state.out.json:
        state.out.data({**info, "matches_models": True})
    else:
        state.out.line(f"database at {', '.join(info['current'])}: matches tasker's models")
