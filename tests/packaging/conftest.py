"""The wheel as users install it: built once per test run, installed once per
Python into a fresh virtualenv, then used from empty directories.

The oldest and newest supported Pythons come from pyenv (PYENV_ROOT or
~/.pyenv) or from `pythonX.Y` on the PATH; a missing one fails the tests,
it never skips them.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

PYTHONS = ("3.10", "3.13")
"""The oldest and the newest Python that `requires-python` admits and CI tests."""


def find_python(version: str) -> str:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python")))
    exe = found[-1] if found else shutil.which(f"python{version}")
    if not exe:
        pytest.fail(f"Python {version} is needed for the packaging tests and was not found")
    return exe


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no TASKER_* and nothing pointing at this checkout."""
    drop = ("TASKER_", "PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


BUILD_LEFTOVERS = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "demo-run", "*.db*"
)
"""Kept out of the copy the wheel is built from: setuptools packs whatever a
stale build/ still holds (a module since removed, say)."""


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once per run from a clean copy of this checkout."""
    src = tmp_path_factory.mktemp("src") / "tasker"
    shutil.copytree(ROOT, src, ignore=BUILD_LEFTOVERS)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("tasker-*.whl")
    return built


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`venv("3.10")`: the bin/ folder of a virtualenv with the wheel installed (made once)."""
    made: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in made:
            where = tmp_path_factory.mktemp(f"venv-{version}")
            subprocess.run(
                [find_python(version), "-m", "venv", str(where)], check=True, timeout=120
            )
            done = subprocess.run(
                [str(where / "bin" / "pip"), "install", "-q", str(wheel)],
                capture_output=True,
                text=True,
                env=clean_env(),
                timeout=600,
            )
            assert done.returncode == 0, done.stderr
            made[version] = where / "bin"
        return made[version]

    return get
