"""A user's MsgQ subclass type-checks as the dataclass it becomes (DESIGN 1).

One mypy run over one small user module holding every case; each case that
must be refused sits on its own line, and the errors are matched by line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tasker

pytest.importorskip("mypy")

REPO = Path(tasker.__file__).resolve().parent.parent

USER_MODULE = textwrap.dedent(
    """\
    from __future__ import annotations

    from tasker import MsgQ
    from tasker.context import Context


    class Resize(MsgQ):
        topic = "image.resize"
        concurrency = 4
        timeout = 30.0
        retry = 3
        spec = 0.5
        isolation = "process"
        timezone = "Europe/Paris"
        catch_up = "all"
        priority = 5
        global_concurrency = 10
        rate_limit = "10/s"
        result_topic = "image.results"
        retry_on = (ConnectionError, TimeoutError)
        backoff = 2.5
        expires = 60
        lock = "image:{path}"
        path: str
        width: int = 640

        def exec(self, ctx: Context, worker_id: int) -> object:
            return self.path


    ok_required = Resize(path="a.png")  # ok
    ok_both = Resize(path="a.png", width=3)  # ok
    ok_attr: str = ok_both.path  # ok
    misspelt = Resize(paht="a.png")  # refused
    missing = Resize()  # refused
    wrong_type = Resize(path=3)  # refused
    setting_is_no_field = Resize(path="a.png", topic="x")  # refused


    class Custom(MsgQ):
        topic = "image.custom"
        backoff = staticmethod(lambda attempt: 2.0 * attempt)


    class Plain(MsgQ):
        topic = "image.plain"
        backoff = lambda attempt: 2.0 * attempt  # noqa: E731

        def exec(self, ctx: Context, worker_id: int) -> object:
            return None
    """
)


def _lines(marker: str) -> set[int]:
    return {
        n for n, line in enumerate(USER_MODULE.splitlines(), 1) if line.endswith(f"# {marker}")
    }


def test_mypy_accepts_fields_and_flags_wrong_or_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "user_tasks.py").write_text(USER_MODULE)
    # Minimal config: tasker is read for its types, only the user module reports.
    (tmp_path / "mypy.ini").write_text("[mypy]\nfollow_imports = silent\n")
    env = {**os.environ, "MYPYPATH": str(REPO)}  # this tree's tasker, not an installed one
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            "--show-error-codes",
            "user_tasks.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors: dict[int, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"user_tasks\.py:(\d+): error: (.*)", line)
        if m:
            errors.setdefault(int(m.group(1)), []).append(m.group(2))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    refused, accepted = _lines("refused"), _lines("ok")
    assert len(refused) == 4 and len(accepted) == 3
    assert set(errors) == refused, proc.stdout
    by_case = {USER_MODULE.splitlines()[n - 1].split(" =")[0]: errors[n] for n in refused}
    assert any('"paht"' in e for e in by_case["misspelt"]), by_case
    assert any('"path"' in e for e in by_case["missing"]), by_case
    assert any("[arg-type]" in e for e in by_case["wrong_type"]), by_case
    assert any('"topic"' in e for e in by_case["setting_is_no_field"]), by_case
