"""`tasker pause` / `resume` / `status`, `tasker publish --priority --unique-key`
and `tasker retry` of a held key, as subprocesses against PostgreSQL."""

from __future__ import annotations

import json

from tasker import Tasker, admin
from tests.integration.test_admin import Job, run_to
from tests.integration.test_cli import cli, one_line_error, papp

__all__ = ["cli", "papp"]  # fixtures


def test_pause_resume_and_status(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    papp.publish(Job(n=1))
    p = cli("pause", Job.topic)
    assert p.returncode == 0 and p.stdout.strip() == f"paused {Job.topic}", p.stderr
    assert admin.paused_topics(papp) == {Job.topic}
    p = cli("status")
    assert p.returncode == 0
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith(Job.topic))
    assert line.rstrip().endswith("PAUSED"), p.stdout
    p = cli("--json", "status")
    assert json.loads(p.stdout)["paused"] == [Job.topic]
    p = cli("--json", "resume", Job.topic)
    assert p.returncode == 0 and json.loads(p.stdout) == {"resumed": Job.topic}
    assert admin.paused_topics(papp) == set()
    assert "PAUSED" not in cli("status").stdout
    one_line_error(cli("pause", ""), 1, "topic")
    one_line_error(cli("pause", "x" * 201), 1, "200 characters")
    one_line_error(cli("pause"), 2)


def test_publish_with_priority_and_a_unique_key(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    p = cli("publish", "adm.job", '{"n": 1}', "--priority", "5", "--unique-key", "k")
    assert p.returncode == 0, p.stderr
    first = int(p.stdout)
    again = cli("publish", "adm.job", '{"n": 2}', "--unique-key", "k")
    assert again.returncode == 0 and int(again.stdout) == first
    one_line_error(
        cli("publish", "adm.job", "{}", "--unique-key", "k", "--on-conflict", "raise"),
        1, f"task {first}",
    )  # fmt: skip
    one_line_error(cli("publish", "adm.job", "{}", "--priority", "high"), 2)
    one_line_error(cli("publish", "adm.job", "{}", "--unique-key", "x" * 300), 1, "255")
    assert admin.get_task(papp, first)["priority"] == 5


def test_retry_of_a_held_key_names_the_holder(cli, papp: Tasker) -> None:  # type: ignore[no-untyped-def]
    old = papp.publish(Job(n=1), unique_key="k")
    assert run_to(papp, Job.topic, "fail") == [old]
    live = papp.publish(Job(n=2), unique_key="k")
    one_line_error(cli("retry", str(old)), 1, f"task {live} holds the unique key of {old}")
    assert admin.get_task(papp, old)["status"] == "failed"
