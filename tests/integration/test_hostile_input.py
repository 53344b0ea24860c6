"""Hostile text at every entry point, on SQLite and PostgreSQL: topics and
keys holding control or bidi characters are refused with one clear error
(`topics.topic_problem` / `topics.key_problem`, the one rule), and what the
CLI and the dashboard print of stored text never carries such a character
raw (an old row, or one written by hand in SQL, may hold anything)."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasker import ConfigurationError, Context, MsgQ, Tasker, admin
from tasker.schema import task
from tasker.web.server import create_app
from tests.integration.test_web_actions import TOKEN, call

ESC = "\x1b"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
BAD = [ESC, RLO, "\x00", "\n", "\t", "\x7f", "\x9b", "\u202a", "\u2066", "\u2069"]

Cli = Callable[..., subprocess.CompletedProcess[str]]


class Plain(MsgQ):
    topic = "hostile.plain"
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


@pytest.fixture
def cli(db_url: str, local_broker: str, tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=db_url, TASKER_BROKER_URL=local_broker, COLUMNS="200")

    def run(*args: str, tty: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "tasker.cli", *args]
        if not tty:
            return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                                  timeout=60)  # fmt: skip
        leader, follower = pty.openpty()  # stdout a terminal: the rich table
        with subprocess.Popen(cmd, stdout=follower, stderr=subprocess.PIPE, env=env,
                              cwd=tmp_path) as p:  # fmt: skip
            os.close(follower)
            out = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            err = p.stderr.read() if p.stderr else b""
        os.close(leader)
        return subprocess.CompletedProcess(cmd, p.returncode, out.decode(), err.decode())

    return run


def one_line_error(p: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert p.returncode == code, (p.stdout, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tasker: "), p.stderr
    assert needle in lines[0], p.stderr


def task_count(app: Tasker) -> int:
    with app.transaction() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(task)).scalar_one())


# --- refused where they come in --------------------------------------------------


@pytest.mark.parametrize("ch", BAD)
def test_a_topic_with_a_control_or_bidi_character_is_refused_everywhere(
    app: Tasker, ch: str
) -> None:
    topic = f"report{ch}exe"
    code = f"U+{ord(ch):04X}"
    with pytest.raises(ConfigurationError, match=re.escape(code)):
        type("Evil", (MsgQ,), {"topic": topic, "exec": Plain.exec})
    with pytest.raises(ConfigurationError, match=re.escape(code)):
        admin.publish(app, topic, {})
    with pytest.raises(ConfigurationError, match=re.escape(code)):
        app.chain([Plain(), topic])
    with pytest.raises(ConfigurationError, match=re.escape(code)):
        admin.pause(app, topic)
    assert task_count(app) == 0
    web = create_app(app, allow_actions=True, token=TOKEN)
    status, _, body = call(web, "GET", "/api/tasks", "topic=" + _quoted(topic))
    assert status == 400 and code in body["error"]
    status, _, body = call(web, "POST", f"/api/topics/{topic}/pause")  # the decoded path
    if ch == "\n":  # no route matches a path holding a line break
        assert status == 404
    else:
        assert status == 400 and code in body["error"]
    assert admin.paused_topics(app) == set()


def _quoted(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


@pytest.mark.parametrize("ch", [ESC, RLO, "\n", "\x9b", "\u2067"])
def test_a_unique_key_or_lock_key_with_a_control_or_bidi_character_is_refused(
    app: Tasker, ch: str
) -> None:
    code = re.escape(f"U+{ord(ch):04X}")
    with pytest.raises(ConfigurationError, match=f"unique_key must not contain .*{code}"):
        app.publish(Plain(), unique_key=f"k{ch}")
    with pytest.raises(ConfigurationError, match=f"unique_key must not contain .*{code}"):
        admin.publish(app, "hostile.raw", {}, unique_key=f"k{ch}")
    with pytest.raises(ConfigurationError, match=f"lock must not contain .*{code}"):
        app.publish(Plain(), lock=f"k{ch}")

    class Locked(MsgQ):
        topic = "hostile.locked"
        lock = "who:{who}"
        who: str = ""

        def exec(self, ctx: Context, worker_id: int) -> object:
            return None

    with pytest.raises(ConfigurationError, match=f"Locked.lock must not contain .*{code}"):
        app.publish(Locked(who=f"a{ch}b"))
    assert task_count(app) == 0


def test_the_cli_refuses_a_control_character_in_a_topic_or_key(cli: Cli) -> None:
    one_line_error(cli("publish", f"a{RLO}b", "{}"), 1, "U+202E")
    one_line_error(cli("pause", f"a{ESC}b"), 1, "U+001B")
    one_line_error(cli("publish", "t", "{}", "--unique-key", f"k{ESC}[2J"), 1, "U+001B")


# --- never printed raw ------------------------------------------------------------

TOPIC = f"[bold]inv{RLO}fdp.exe"  # rich markup, and a bidi override
LOG = f"plain line\ncolour {ESC}[31mred{ESC}[0m\tand a tab\nclear {ESC}[2J{ESC}c done\n"


def hostile_row(app: Tasker) -> int:
    """A row as an old release or a hand-written SQL statement may leave it."""
    tid = app.publish(Plain())
    with app.transaction() as conn:
        conn.execute(
            sa.update(task).where(task.c.id == tid).values(
                topic=TOPIC, log=LOG, errlog=f"[attempt 1 on h] boom {ESC}]0;pwned{ESC}\\\n",
                input=f'{{"n": 1, "s": "{RLO}"}}', worker_fqdn=f"host{ESC}[8m\n",
                unique_key=f"key{ESC}", lock_key=f"[bold red]lock{RLO}",
            )
        )  # fmt: skip
    return tid


def no_raw_controls(text: str, keep: str = "\n") -> None:
    raw = sorted({f"U+{ord(c):04X}" for c in text if c in "".join(BAD) and c not in keep})
    assert raw == [], text


def test_the_cli_escapes_control_and_bidi_characters_it_prints(app: Tasker, cli: Cli) -> None:
    tid = hostile_row(app)
    listed = cli("tasks")
    assert listed.returncode == 0, listed.stderr
    no_raw_controls(listed.stdout)
    assert "[bold]inv\\u202efdp.exe" in listed.stdout
    shown = cli("show", str(tid))
    assert shown.returncode == 0, shown.stderr
    no_raw_controls(shown.stdout, keep="\n\t")
    seen = ["colour \\x1b[31mred\\x1b[0m\tand a tab", "\\x1b[2J\\x1bc done", "host\\x1b[8m",
            "key\\x1b", "[bold red]lock\\u202e", '"s": "\\u202e"']  # fmt: skip
    assert [s for s in seen if s not in shown.stdout] == [], shown.stdout
    tty = cli("tasks", tty=True)  # the rich table: escaped too, and no markup read
    assert tty.returncode == 0, tty.stderr
    assert "[bold]inv\\u202efdp.exe" in tty.stdout and RLO not in tty.stdout
    tty = cli("show", str(tid), tty=True)
    assert "[bold red]lock\\u202e" in tty.stdout
    with app.transaction() as conn:  # a host name from TASKER_FQDN, printed by `status`
        conn.execute(sa.text("UPDATE core SET master_instance_id = 1, master_fqdn = :h"),
                     {"h": f"evil{ESC}]0;title{ESC}\\host"})  # fmt: skip
    status = cli("status")
    assert status.returncode == 0, status.stderr
    no_raw_controls(status.stdout)
    assert "evil\\x1b]0;title\\x1b\\host" in status.stdout and "[bold]inv" in status.stdout


def test_the_dashboard_escapes_control_and_bidi_characters_it_shows(app: Tasker) -> None:
    tid = hostile_row(app)
    web = create_app(app)
    for path in (f"/tasks/{tid}", "/tasks", "/"):
        status, _, page = call(web, "GET", path)
        assert status == 200, page
        no_raw_controls(page, keep="\n\t")
        assert "inv\\u202efdp.exe" in page, path
    status, _, page = call(web, "GET", f"/tasks/{tid}")
    assert "colour \\x1b[31mred\\x1b[0m\tand a tab" in page
    status, _, data = call(web, "GET", f"/api/tasks/{tid}")  # JSON: the data as it is
    assert status == 200 and data["topic"] == TOPIC


# --- numbers out of range -------------------------------------------------------------

HUGE = "99999999999999999999"  # past 64 bits


def test_cli_numbers_out_of_range_are_one_line_and_exit_2(app: Tasker, cli: Cli) -> None:
    app.register(Plain)
    tid = app.publish(Plain())
    assert admin.cancel(app, [tid]) == [tid]  # failed: retry may take it
    cases = [
        (("tasks", "--limit", HUGE), "--limit"),
        (("tasks", "--limit", str(2**63)), "--limit"),
        (("tasks", "--limit", "0"), "--limit"),
        (("retry", str(tid), "--runs", "99999999999"), "--runs"),
        (("retry", str(tid), "--runs", str(2**31)), "--runs"),
        (("retry", "--status", "failed", "--runs", HUGE, "-y"), "--runs"),
        (("purge", "--older-than", "1d", "--batch", HUGE, "-y"), "--batch"),
        (("publish", "t", "{}", "--priority", HUGE), "--priority"),
        (("publish", "t", "{}", "--priority", str(-(2**31) - 1)), "--priority"),
        (("publish", "t", "{}", "--retry", "99999999999"), "--retry"),
        (("publish", "t", "{}", "--timeout", "1e300"), "--timeout"),
        (("publish", "t", "{}", "--timeout", "0.0001"), "--timeout"),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:  # independent processes: run them at once
        results = list(pool.map(lambda c: cli(*c[0]), cases))
    for (args, option), p in zip(cases, results, strict=True):
        one_line_error(p, 2, option)
        assert "not in the range" in p.stderr, (args, p.stderr)
    assert admin.get_task(app, tid)["status"] == "failed"  # nothing moved
    assert task_count(app) == 1

    # The largest values the columns hold work on both databases.
    p = cli("--json", "tasks", "--limit", str(2**63 - 1))
    assert p.returncode == 0 and [r["id"] for r in json.loads(p.stdout)] == [tid], p.stderr
    p = cli("retry", str(tid), "--runs", str(2**31 - 1))
    assert p.returncode == 0, p.stderr
    assert admin.get_task(app, tid)["retry"] == 2**31 - 1
    p = cli("purge", "--older-than", "1d", "--batch", str(2**63 - 1), "-y")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda app: admin.list_tasks(app, limit=2**63), "limit must be 1 to"),
        (lambda app: admin.list_tasks(app, limit=0), "limit must be 1 to"),
        (lambda app: admin.retry(app, [1], runs=2**31), "runs must be 1 to 2147483647"),
        (lambda app: admin.retry(app, [1], runs=True), "runs must be an int"),
        (lambda app: admin.purge(app, dt.timedelta(days=1), batch=2**64), "batch must be 1 to"),
        (lambda app: admin.purge(app, dt.timedelta(days=1), batch="5"), "batch must be an int"),
    ],
    ids=["limit-huge", "limit-0", "runs-huge", "runs-bool", "batch-huge", "batch-text"],
)
def test_admin_numbers_out_of_range_are_refused_before_the_database(
    app: Tasker, call: Callable[[Tasker], object], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says):
        call(app)
