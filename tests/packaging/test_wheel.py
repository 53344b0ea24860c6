"""A user's first steps with the wheel, on the oldest and newest supported Python:
`pip install`, `tasker db upgrade` in an empty directory, a task end to end on
the embedded default and on PostgreSQL with RabbitMQ, the demo, and tasker's
migrations inside a freshly `alembic init`-ed project of the user's own."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration import test_cli_db
from tests.integration.test_cli_db import HEAD
from tests.packaging.conftest import PYTHONS, clean_env

pytestmark = pytest.mark.packaging

empty_pg_url = test_cli_db.empty_pg_url  # the fixture: a database with no tables

TASKS = """
import os

from tasker import Context, MsgQ


class Echo(MsgQ):
    topic = os.environ["PKG_TOPIC"]
    text: str

    def exec(self, ctx: Context, worker_id: int) -> object:
        if ctx.attempt == 1 and self.text == "flaky":
            ctx.exec_after(0)
            raise RuntimeError("first run fails")
        return {"echo": self.text, "attempt": ctx.attempt}
"""

IN_PROCESS = """
import json, os
from tasker import Tasker
from tasker.testing import create_schema, run_until_idle
from mytasks import Echo

app = Tasker()
create_schema(app)
app.register(Echo)
app.publish_many([Echo(text="a"), Echo(text="flaky")])
print(json.dumps(run_until_idle(app, timeout=30)))
app.close()
"""


def sh(bin_dir: Path, cmd: str, *args: str, cwd: Path, env: dict[str, str], timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [str(bin_dir / cmd), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wheel_holds_every_module_and_the_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {
        f"tasker/{p.relative_to(ROOT / 'tasker').as_posix()}"
        for p in (ROOT / "tasker").rglob("*")
        if p.suffix in (".py", ".typed", ".html", ".js", ".css") and "__pycache__" not in p.parts
    }
    assert "tasker/web/templates/overview.html" in source  # the dashboard's files
    migrations = {
        f"tasker/migrations/{p.relative_to(ROOT / 'migrations').as_posix()}"
        for p in (ROOT / "migrations").rglob("*")
        if p.suffix in (".py", ".mako") and "__pycache__" not in p.parts
    }
    assert "tasker/migrations/versions/0001_initial.py" in migrations
    missing = (source | migrations) - names
    assert not missing, f"add their packages to [tool.setuptools] packages: {sorted(missing)}"
    stale = (
        {n for n in names if n.startswith("tasker/") and n.endswith(".py")} - source - migrations
    )
    assert not stale, f"modules that are not in the source tree: {sorted(stale)}"
    assert not [n for n in names if n.startswith("migrations/")]  # no top-level copy


def run_a_task(bin_dir: Path, cwd: Path, env: dict[str, str]) -> None:
    """`tasker run` serves a task published with the CLI; the CLI reads it back."""
    (cwd / "mytasks.py").write_text(TASKS)
    before = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    proc = subprocess.Popen(
        [str(bin_dir / "tasker"), "run", "mytasks"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        p = sh(
            bin_dir,
            "tasker",
            "--json",
            "publish",
            env["PKG_TOPIC"],
            '{"text": "flaky"}',
            cwd=cwd,
            env=env,
        )
        assert p.returncode == 0, p.stderr
        tid = json.loads(p.stdout)["id"]
        deadline = time.monotonic() + 60
        while (
            row := json.loads(
                sh(bin_dir, "tasker", "--json", "show", str(tid), cwd=cwd, env=env).stdout
            )
        )["status"] != "success":
            assert time.monotonic() < deadline, row
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert json.loads(row["result"]) == {"echo": "flaky", "attempt": 2}
        assert "first run fails" in row["errlog"]
        listed = sh(bin_dir, "tasker", "--json", "tasks", "--since", before, cwd=cwd, env=env)
        assert listed.returncode == 0, listed.stderr  # `Z` parses on every Python
        assert [r["id"] for r in json.loads(listed.stdout)] == [tid]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("py", PYTHONS)
def test_first_steps_on_the_embedded_default(
    py: str, venv: Callable[[str], Path], tmp_path: Path
) -> None:
    bin_dir = venv(py)
    env = clean_env(PKG_TOPIC="pkg.echo")
    where = sh(
        bin_dir, "python", "-c", "import tasker; print(tasker.__file__)", cwd=tmp_path, env=env
    )
    assert where.stdout.startswith(str(bin_dir.parent)), where  # the wheel, not this checkout

    p = sh(bin_dir, "tasker", "db", "upgrade", cwd=tmp_path, env=env)
    assert (p.returncode, p.stdout.strip()) == (0, f"database at {HEAD} (head)"), p.stderr
    assert (tmp_path / "tasker.db").is_file()
    assert sh(bin_dir, "tasker", "db", "check", cwd=tmp_path, env=env).returncode == 0
    run_a_task(bin_dir, tmp_path, env)

    (tmp_path / "in_process.py").write_text(IN_PROCESS)
    p = sh(bin_dir, "python", "in_process.py", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"success": 2}


@pytest.mark.parametrize("py", PYTHONS)
def test_first_steps_on_postgresql_and_rabbitmq(
    py: str, venv: Callable[[str], Path], tmp_path: Path, empty_pg_url: str, amqp_url: str
) -> None:
    bin_dir = venv(py)
    env = clean_env(
        TASKER_DATABASE_URL=empty_pg_url,
        TASKER_BROKER_URL=amqp_url,
        PKG_TOPIC=f"pkg.echo.{uuid.uuid4().hex[:8]}",  # queues are shared on the broker
    )
    p = sh(bin_dir, "tasker", "db", "upgrade", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert sh(bin_dir, "tasker", "db", "check", cwd=tmp_path, env=env).returncode == 0
    run_a_task(bin_dir, tmp_path, env)
    assert not (tmp_path / "tasker.db").exists()


def test_demo_runs_from_the_wheel(venv: Callable[[str], Path], tmp_path: Path) -> None:
    p = sh(
        venv(PYTHONS[-1]), "python", "-m", "tasker.demo", cwd=tmp_path, env=clean_env(), timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "doomed" in p.stdout and "success" in p.stdout
    assert (tmp_path / "demo-run" / "tasker.db").is_file()


USER_MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
note = sa.Table(
    "note",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)
"""


def test_tasker_migrations_in_the_users_own_alembic(
    venv: Callable[[str], Path], tmp_path: Path, empty_pg_url: str
) -> None:
    bin_dir = venv(PYTHONS[-1])
    env = clean_env(PYTHONPATH=str(tmp_path))  # the user's own models module

    def alembic(*args: str) -> str:
        p = sh(bin_dir, "alembic", *args, cwd=tmp_path, env=env)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p.stdout + p.stderr

    alembic("init", "alembic")
    (tmp_path / "models.py").write_text(USER_MODELS)
    ini = (tmp_path / "alembic.ini").read_text()
    ini = ini.replace("driver://user:pass@localhost/dbname", empty_pg_url)
    ini = ini.replace(
        "[alembic]",
        "[alembic]\nversion_locations = %(here)s/alembic/versions tasker.migrations:versions",
        1,
    )
    # `tasker.migrations:versions` has a colon: separate the locations by spaces, not os.pathsep
    ini = ini.replace("\npath_separator = os", "\npath_separator = space")
    (tmp_path / "alembic.ini").write_text(ini)
    env_py = (tmp_path / "alembic" / "env.py").read_text()
    env_py = env_py.replace(
        "target_metadata = None",
        "import tasker.schema\nimport models\n\n"
        "target_metadata = [models.metadata, tasker.schema.metadata]",
    )
    (tmp_path / "alembic" / "env.py").write_text(env_py)

    alembic("upgrade", "heads")  # tasker's lineage first, then the user's own
    out = alembic(
        "revision",
        "--autogenerate",
        "-m",
        "notes",
        "--head",
        "base",
        "--branch-label",
        "myapp",
        "--version-path",
        "alembic/versions",
    )
    (mine,) = (tmp_path / "alembic" / "versions").glob("*_notes.py")
    text = mine.read_text()
    assert "create_table('note'" in text or 'create_table("note"' in text
    assert "'task'" not in text and '"task"' not in text, out  # tasker's tables are tasker's
    alembic("upgrade", "heads")
    heads = alembic("heads")
    assert f"{HEAD} (tasker) (head)" in heads and "(myapp) (head)" in heads
    assert "No new upgrade operations detected" in alembic("check")

    def at_tasker_head() -> bool:
        return any(line.startswith(f"{HEAD} ") for line in alembic("current").splitlines())

    assert at_tasker_head()
    alembic("downgrade", "tasker@base")  # one lineage at a time
    assert not at_tasker_head()
    alembic("upgrade", "tasker@head")
    assert "No new upgrade operations detected" in alembic("check")


def test_both_spellings_of_the_revisions_resolve_from_the_wheel(
    venv: Callable[[str], Path], tmp_path: Path
) -> None:
    """DESIGN's `tasker:migrations/versions` and the recipe's
    `tasker.migrations:versions` are the same folder in a wheel install (only
    the second also resolves in an editable one: tests/integration/test_alembic_recipe.py)."""
    for version in PYTHONS:
        code = (
            "from alembic.util import coerce_resource_to_filename as c\n"
            "import tasker.provision as p\n"
            "print(c('tasker:migrations/versions'))\n"
            "print(c('tasker.migrations:versions'))\n"
            "print(p.version_location())\n"
        )
        p = sh(venv(version), "python", "-c", code, cwd=tmp_path, env=clean_env())
        assert p.returncode == 0, p.stderr
        design, recipe, where = p.stdout.split()
        assert Path(design).resolve() == Path(recipe).resolve() == Path(where).resolve()
        assert (Path(design) / "0001_initial.py").is_file() and "site-packages" in design
