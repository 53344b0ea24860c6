"""The own-alembic recipe (docs/howto/alembic-in-your-project.md) in an
editable install of this tree: `tasker.migrations:versions` resolves, alembic
sees tasker's lineage, and autogenerate leaves tasker's tables out of the
user's own. The editable install is made as `pip install -e .` makes it:
setuptools' own finder, mapping the packages as pyproject's package-dir does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.config import Config

from tasker import provision
from tasker.provision import MigrationError

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "howto" / "alembic-in-your-project.md"


def editable_runner(tmp_path: Path) -> list[str]:
    """The start of a command running Python with this tree installed editable."""
    tomllib = pytest.importorskip("tomllib")
    editable = pytest.importorskip("setuptools.command.editable_wheel")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {"tasker": str(ROOT / "tasker")}
    mapping |= {pkg: str(ROOT / d) for pkg, d in config["package-dir"].items()}
    name = "__editable___tasker_under_test_finder"
    finder = tmp_path / "editable"
    finder.mkdir()
    (finder / f"{name}.py").write_text(editable._finder_template(name, mapping, {}))
    boot = (
        f"import sys; sys.path.insert(0, {str(finder)!r}); import {name} as f; "
        "sys.meta_path.insert(0, f._EditableFinder); "
        "from alembic.config import main; main(argv=sys.argv[1:], prog='alembic')"
    )
    return [sys.executable, "-c", boot]


def recipe_ini_line() -> str:
    found = re.search(r"^version_locations = .*$", DOC.read_text(), re.MULTILINE)
    assert found is not None, "the recipe lost its version_locations line"
    return found[0]


def test_the_recipe_finds_tasker_lineage_in_an_editable_install(tmp_path: Path) -> None:
    run = editable_runner(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("TASKER_")}
    project = tmp_path / "project"
    project.mkdir()

    def alembic(*args: str) -> str:
        p = subprocess.run([*run, *args], cwd=project, env=env, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p.stdout + p.stderr

    alembic("init", "alembic")
    ini = (project / "alembic.ini").read_text()
    ini = ini.replace("driver://user:pass@localhost/dbname", f"sqlite:///{project / 'app.db'}")
    ini = ini.replace("[alembic]", "[alembic]\n" + recipe_ini_line(), 1)
    ini = ini.replace("\npath_separator = os", "\npath_separator = space")
    (project / "alembic.ini").write_text(ini)
    env_py = project / "alembic" / "env.py"
    env_py.write_text(env_py.read_text().replace(
        "target_metadata = None",
        "import tasker.schema\nfrom tasker.provision import check_version_locations\n\n"
        "check_version_locations(context.config)\n"
        "target_metadata = [tasker.schema.metadata]",
    ))  # fmt: skip

    assert "(tasker) (head)" in alembic("heads")
    alembic("upgrade", "heads")
    alembic("revision", "--autogenerate", "-m", "mine", "--head", "base",
            "--branch-label", "myapp", "--version-path", "alembic/versions")  # fmt: skip
    (mine,) = (project / "alembic" / "versions").glob("*_mine.py")
    assert "create_table" not in mine.read_text()  # tasker's tables stay tasker's


def test_version_location_is_tasker_revisions_and_the_check_refuses_without_it(
    tmp_path: Path,
) -> None:
    where = Path(provision.version_location())
    assert where.is_absolute() and (where / "0001_initial.py").is_file()
    cfg = Config()
    cfg.set_main_option("path_separator", "space")
    cfg.set_main_option("version_locations", f"{tmp_path} {where}")
    provision.check_version_locations(cfg)
    cfg.set_main_option("version_locations", f"{tmp_path} nosuch.package:versions")
    with pytest.raises(MigrationError, match=r"add tasker\.migrations:versions"):
        provision.check_version_locations(cfg)


@pytest.mark.parametrize(
    ("locations", "separator", "says"),
    [
        # DESIGN's spelling, in a checkout or an editable install: named, with the fix
        ("tasker:migrations/versions", "space",
         r"tasker:migrations/versions does not resolve in an editable install of tasker: "
         r"tasker\.migrations:versions names the same folder in every install"),
        # the default separator on Linux is ':', which splits a resource in two
        ("tasker.migrations:versions", "os", r"\['tasker\.migrations', 'versions'\].*"
         r"split a resource at its colon: set path_separator = space"),
    ],
)  # fmt: skip
def test_the_check_says_why_a_location_did_not_resolve(
    locations: str, separator: str, says: str
) -> None:
    cfg = Config()
    cfg.set_main_option("path_separator", separator)
    cfg.set_main_option("version_locations", locations)
    with pytest.raises(MigrationError, match=says):
        provision.check_version_locations(cfg)


def test_design_spelling_in_an_editable_install_fails_loudly_naming_the_one_that_works(
    tmp_path: Path,
) -> None:
    run = editable_runner(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("TASKER_")}
    project = tmp_path / "project"
    project.mkdir()
    p = subprocess.run([*run, "init", "alembic"], cwd=project, env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    ini = (project / "alembic.ini").read_text()
    ini = ini.replace("driver://user:pass@localhost/dbname", f"sqlite:///{project / 'app.db'}")
    ini = ini.replace(
        "[alembic]",
        "[alembic]\nversion_locations = %(here)s/alembic/versions tasker:migrations/versions", 1
    )  # fmt: skip
    ini = ini.replace("\npath_separator = os", "\npath_separator = space")
    (project / "alembic.ini").write_text(ini)
    env_py = project / "alembic" / "env.py"
    env_py.write_text(env_py.read_text().replace(
        "target_metadata = None",
        "from tasker.provision import check_version_locations\n\n"
        "check_version_locations(context.config)\ntarget_metadata = None",
    ))  # fmt: skip
    p = subprocess.run([*run, "upgrade", "heads"], cwd=project, env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode != 0
    assert "tasker.migrations:versions names the same folder in every install" in p.stderr
