"""A real Django project (django_project/) on tasker's backend, in virtualenvs
with Django 6 (Python 3.12) and with the django-tasks backport on Django 5.2
LTS (Python 3.10, the oldest tasker supports).

Each virtualenv holds Django and this checkout installed editable with its
`django` extra; it is built once and kept under the temp dir, keyed by the
checkout's path and pyproject.toml's hash (a change of dependencies builds a
new one). A Python that pyenv or the PATH cannot give fails the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, _pg_admin
from tests.packaging.conftest import find_python

PROJECT = Path(__file__).resolve().parent / "django_project"
FLAVOURS = {
    # id: (Python, what is installed besides tasker[django])
    "django6": ("3.12", "Django>=6,<7"),
    "backport": ("3.10", "Django>=5.2,<5.3"),
}


def django_venv(flavour: str) -> Path:
    """The bin/ folder of the flavour's virtualenv, built if not cached."""
    version, django = FLAVOURS[flavour]
    key = hashlib.sha256(
        str(ROOT).encode() + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()[:16]
    base = Path(tempfile.gettempdir()) / "tasker-django-venvs"
    base.mkdir(exist_ok=True)
    where = base / f"{flavour}-{key}"
    with open(base / f"{flavour}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # sessions running at once build it once
        if (where / "ready").exists():
            return where / "bin"
        shutil.rmtree(where, ignore_errors=True)
        subprocess.run([find_python(version), "-m", "venv", str(where)], check=True, timeout=120)
        done = subprocess.run(
            [str(where / "bin" / "pip"), "install", "-q", django, "-e", f"{ROOT}[django]"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode:
            pytest.fail(f"cannot build the {flavour} virtualenv:\n{done.stderr[-3000:]}")
        (where / "ready").write_text("")
    return where / "bin"


@dataclass
class DjangoProject:
    """The test project on one Django, its own database and folder broker."""

    bin: Path
    database: str
    env: dict[str, str]
    worker: subprocess.Popen[str] | None = None

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "python"), "manage.py", *args],
            cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def drive(self, *args: str) -> Any:
        """drive.py's JSON answer (see django_project/drive.py)."""
        done = subprocess.run(
            [str(self.bin / "python"), "drive.py", *args],
            cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def row(self, task_id: str) -> dict[str, Any] | None:
        """The task row as tasker stored it, read with psycopg (not through Django)."""
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{self.database}") as conn:
            cur = conn.execute(
                "SELECT topic, status, priority, exec_after, exec_after - now() AS delay"
                " FROM task WHERE id = %s",
                (int(task_id),),
            )
            found = cur.fetchone()
            if found is None:
                return None
            names = [d.name for d in cur.description or []]
            return dict(zip(names, found, strict=True))


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DjangoProject]:
    """The project with a fresh migrated database and `manage.py tasker run` running."""
    flavour = request.param
    bin_dir = django_venv(flavour)
    name = f"tasker_dj_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    broker = tmp_path_factory.mktemp(f"broker-{flavour}")
    drop = ("TASKER_", "PYTHON", "VIRTUAL_ENV", "DJANGO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(TEST_DJANGO_DB=name, TASKER_BROKER_URL=f"filesystem://{broker}")
    proj = DjangoProject(bin_dir, name, env)
    try:
        upgraded = proj.manage("tasker", "db", "upgrade")  # the docs' way to provision
        assert upgraded.returncode == 0 and "(head)" in upgraded.stdout, upgraded.stderr
        with _worker(proj, tmp_path_factory.mktemp(f"log-{flavour}") / "worker.log"):
            yield proj
    finally:
        with _pg_admin() as conn, contextlib.suppress(psycopg.Error):
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def _worker(proj: DjangoProject, log_path: Path) -> Iterator[None]:
    """`manage.py tasker run` for the block; it must stop with 0 on SIGTERM."""
    with open(log_path, "w+") as log:
        proj.worker = subprocess.Popen(
            [str(proj.bin / "python"), "manage.py", "tasker", "run"],
            cwd=PROJECT, env=proj.env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            yield
        finally:
            proj.worker.send_signal(signal.SIGTERM)
            try:
                code = proj.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proj.worker.kill()
                code = None
            log.seek(0)
            if code != 0:
                print(log.read(), file=sys.stderr)
                pytest.fail(f"manage.py tasker run exited {code} on SIGTERM (log above)")
