"""`tasker web` refuses clearly before serving: a missing extra, a short token."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from tasker.cli import cli


def test_a_missing_web_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now fails
    result = CliRunner().invoke(cli, ["web"])
    assert result.exit_code == 1
    assert 'pip install "tasker[web]"' in result.output and "uvicorn" in result.output


def test_a_short_token_is_refused_and_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKER_WEB_TOKEN", "short-secret")
    result = CliRunner().invoke(cli, ["web", "--allow-actions"])
    assert result.exit_code == 1
    assert "too short" in result.output and "short-secret" not in result.output
