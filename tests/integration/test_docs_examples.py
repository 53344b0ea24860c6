"""The complete programs of README.md and docs/ run as written.

A ```python block is a complete program when the line before it is an HTML
comment starting with `run`:

    <!-- run -->                                  exit status 0
    <!-- run: expect "success" expect "[1]" -->   ... and each text in its output

Each one runs with this interpreter in a fresh temporary directory, on the
embedded default (no TASKER_* variable: a SQLite file and a folder broker
in that directory), with this checkout first on the import path. Unmarked
blocks are fragments and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"^<!--\s*run\b(?::(?P<args>.*?))?\s*-->\s*$")
EXPECT = re.compile(r'expect\s+"((?:[^"\\]|\\.)*)"')
DEADLINE_S = 60.0  # one example; they take about a second each


@dataclass(frozen=True)
class Example:
    page: Path
    line: int  # of the marker, 1-based
    code: str
    expect: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_marker(args: str | None, where: str) -> tuple[str, ...]:
    """The `expect "..."` texts of a marker; anything else in it is a mistake."""
    args = (args or "").strip()
    expects = tuple(re.sub(r"\\(.)", r"\1", m.group(1)) for m in EXPECT.finditer(args))
    leftover = EXPECT.sub("", args).strip()
    if leftover:
        raise ValueError(f"{where}: cannot read {leftover!r} in the run marker")
    return expects


def examples_of(page: Path) -> list[Example]:
    """Every marked block of `page`; a marker not followed by a python block fails."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    for i, text in enumerate(lines):
        m = MARKER.match(text.strip())
        if not m:
            continue
        where = f"{page.relative_to(ROOT)}:{i + 1}"
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
            raise ValueError(f"{where}: a run marker must be followed by a ```python block")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{where}: the ```python block is not closed")
        code = "\n".join(lines[i + 2 : end]) + "\n"
        found.append(Example(page, i + 1, code, parse_marker(m.group("args"), where)))
    return found


EXAMPLES = [e for page in PAGES for e in examples_of(page)]


def test_examples_are_collected() -> None:
    """The quickstart's programs and the README's first MsgQ are found (a broken
    marker or a renamed page would otherwise quietly run nothing)."""
    pages = {e.page.relative_to(ROOT).as_posix() for e in EXAMPLES}
    assert "docs/quickstart.md" in pages, pages
    assert "README.md" in pages, pages
    assert len(EXAMPLES) >= 5, [e.where for e in EXAMPLES]


def example_env() -> dict[str, str]:
    """A user's shell: no TASKER_* variable, this checkout importable first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.where)
def test_example_runs(example: Example, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    shown = f"{example.where}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, shown
    for text in example.expect:
        assert text in proc.stdout, f"{text!r} not printed by {shown}"
