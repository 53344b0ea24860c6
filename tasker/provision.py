"""Provision the schema with tasker's own migrations, wherever tasker is installed.

The migrations ship inside the wheel as the package `tasker.migrations`
(pyproject maps the repository's top-level `migrations/` there); in a
source checkout or an editable install they are that top-level folder. In
a user's own alembic.ini the resource `tasker.migrations:versions` names
tasker's revisions in both kinds of install (`tasker:migrations/versions`,
DESIGN's spelling, resolves from a wheel but not in an editable install:
see PACKAGE_RESOURCE); `version_location()` is that path, and
`check_version_locations` makes env.py fail loudly when alembic cannot see
them (alembic skips a location that does not resolve, and autogenerate would
then write tasker's tables into the user's own lineage). Everything here is
alembic's own command API on those migrations; alembic's and the driver's
exceptions come out as one-line `TaskerError`s.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError, coerce_resource_to_filename

from tasker import db, defaults
from tasker.exceptions import DatabaseError, TaskerError

BRANCH = "tasker"
"""The branch label of tasker's lineage in a user's own alembic environment."""


class MigrationError(TaskerError):
    """alembic refused: unknown revision, or the schema differs from tasker's models."""


def migrations_dir() -> Path:
    """The folder holding env.py and versions/: packaged, else the checkout's.

    Raises `TaskerError` when neither exists (a broken install).
    """
    packaged = Path(str(resources.files("tasker") / "migrations"))
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise TaskerError(f"tasker's migrations are missing (looked in {packaged} and {checkout})")


VERSION_RESOURCE = "tasker.migrations:versions"
"""What a user's alembic.ini lists in `version_locations` for tasker's revisions."""


def version_location() -> str:
    """The folder of tasker's revisions, absolute, in a wheel, an editable
    install or a checkout; `TaskerError` when the install is broken."""
    return str(migrations_dir() / "versions")


PACKAGE_RESOURCE = "tasker:migrations/versions"
"""DESIGN's spelling of the same folder: it resolves wherever tasker is
installed from a wheel, but not in an editable install (`pip install -e`),
whose `tasker` package is the checkout's `tasker/` folder, while the
migrations stay at the top of the checkout (mapped to `tasker.migrations`)."""


def check_version_locations(cfg: Config) -> None:
    """Raise MigrationError unless one of `cfg`'s `version_locations` is
    tasker's revisions folder (call it from a user's env.py, see
    docs/howto/alembic-in-your-project.md). The message says what alembic
    read: a resource split at its colon (`path_separator = os` on Linux),
    or PACKAGE_RESOURCE in an editable install."""
    want = Path(version_location()).resolve()
    seen = cfg.get_version_locations_list() or []
    for location in seen:
        try:
            if Path(coerce_resource_to_filename(location)).resolve() == want:
                return
        except (ImportError, ValueError, TypeError, OSError):
            continue  # alembic skips it too: say so below
    why = ""
    if PACKAGE_RESOURCE in seen:
        why = (
            f" ({PACKAGE_RESOURCE} does not resolve in an editable install of tasker: "
            f"{VERSION_RESOURCE} names the same folder in every install)"
        )
    elif "tasker" in seen or "tasker.migrations" in seen:
        why = " (alembic split a resource at its colon: set path_separator = space)"
    raise MigrationError(
        f"alembic cannot see tasker's revisions in version_locations {seen!r}{why}: add "
        f"{VERSION_RESOURCE} (it is {want}); without them autogenerate would write tasker's "
        "tables into yours"
    )


def config(database_url: str | None = None, connection: sa.Connection | None = None) -> Config:
    """An alembic Config for tasker's migrations, no ini file needed.

    The database is `connection` if given, else `database_url`, else
    TASKER_DATABASE_URL, else the embedded default (see migrations/env.py).
    """
    cfg = Config(stdout=io.StringIO())  # results are returned or raised, not printed
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["configure_logger"] = False
    cfg.attributes["database_url"] = (
        database_url or os.environ.get("TASKER_DATABASE_URL", "").strip() or defaults.DATABASE_URL
    )
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def _alembic_errors(cfg: Config) -> Iterator[None]:
    """alembic's and the driver's exceptions as one-line tasker errors."""
    try:
        yield
    except (CommandError, RevisionError) as exc:
        raise MigrationError(_first_line(exc)) from exc
    except sa.exc.DBAPIError as exc:
        where = db.redact(cfg.attributes["database_url"])
        detail = _first_line(exc.orig) if exc.orig else _first_line(exc)
        raise DatabaseError(f"database error on {where}: {detail}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"database error: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def upgrade(cfg: Config, revision: str = "heads") -> None:
    """Upgrade to `revision` (default: every head). Raises MigrationError, DatabaseError."""
    with _alembic_errors(cfg):
        command.upgrade(cfg, revision)


def downgrade(cfg: Config, revision: str) -> None:
    """Downgrade to `revision` (`base` drops tasker's tables). Raises as `upgrade`."""
    with _alembic_errors(cfg):
        command.downgrade(cfg, revision)


def check(cfg: Config) -> None:
    """Raise MigrationError unless the database is at head and matches tasker's models."""
    info = current(cfg)
    if not info["at_head"]:
        raise MigrationError(
            f"the database is at {', '.join(info['current']) or 'no revision'}, tasker's head "
            f"is {', '.join(info['heads'])}: run `tasker db upgrade`"
        )
    with _alembic_errors(cfg):
        command.check(cfg)


def current(cfg: Config) -> dict[str, Any]:
    """The database's revisions and tasker's heads: {"current": [...], "heads": [...],
    "at_head": bool}. Raises DatabaseError when the database cannot be read."""
    with _alembic_errors(cfg):
        heads = sorted(ScriptDirectory.from_config(cfg).get_heads())
        conn = cfg.attributes.get("connection")
        if conn is not None:
            found = MigrationContext.configure(conn).get_current_heads()
        else:
            engine = db.make_engine(cfg.attributes["database_url"])
            try:
                with engine.connect() as c:
                    found = MigrationContext.configure(c).get_current_heads()
            finally:
                engine.dispose()
    return {"current": sorted(found), "heads": heads, "at_head": sorted(found) == heads}
