"""The `tasker` command: run an instance, publish, and admin work over `tasker.admin`.

Output is a rich table on a terminal, aligned plain text when piped, and
JSON with `--json`. Every error is one line on stderr and a non-zero exit
(1 for tasker errors, 2 for bad arguments); bulk changes ask first unless
`--yes`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

from tasker import admin
from tasker.app import Tasker
from tasker.exceptions import ConfigurationError, TaskerError
from tasker.msgq import classes_in
from tasker.states import Status

_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
STATUSES = [s.value for s in Status]
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


# --- argument types -----------------------------------------------------------


def parse_duration(text: str) -> dt.timedelta:
    """`7d`, `12h`, `30m`, `45s`, `1w`, or sums like `1h30m`; ValueError otherwise."""
    raw = text.strip().lower()
    parts = _DURATION.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"{text!r} is not a duration (like 7d, 12h, 30m, 45s)")
    return dt.timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in parts))


def parse_when(text: str) -> dt.datetime | dt.timedelta:
    """An ISO datetime (naive = UTC) or a duration meaning that long ago."""
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO datetime nor a duration ago (like 2h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _When(click.ParamType):
    name = "WHEN"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.datetime | dt.timedelta:
        if isinstance(value, (dt.datetime, dt.timedelta)):
            return value
        try:
            return parse_when(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Duration()
WHEN = _When()


# --- output -------------------------------------------------------------------


class Out:
    """Where results go: JSON, a rich table (terminal) or plain aligned text."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.tty = sys.stdout.isatty()

    def data(self, value: Any) -> None:
        click.echo(admin.dumps(value))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
        cells = [[_cell(v) for v in r] for r in rows]
        if self.tty:
            from rich.console import Console
            from rich.table import Table

            t = Table(title=title or None)
            for c in columns:
                t.add_column(c, no_wrap=c in ("id", "status", "pid"))
            for r in cells:
                t.add_row(*r)
            Console().print(t)
            return
        if title:
            click.echo(title)
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        for r in [list(columns), *cells]:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())

    def line(self, text: str) -> None:
        click.echo(text)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s ago"


# --- plumbing -----------------------------------------------------------------


class State:
    def __init__(self, database_url: str | None, broker_url: str | None, as_json: bool) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.out = Out(as_json)
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from tasker.app import Tasker

            self._app = Tasker(self.database_url, broker=self.broker_url)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.engine.dispose()


pass_state = click.make_pass_decorator(State)


def confirm(what: str, n: int, yes: bool) -> None:
    """Say how many rows will change; go on only on --yes or a typed yes."""
    if n == 0:
        return
    if yes:
        click.echo(f"{what}: {n} task(s)", err=True)
        return
    click.echo(f"{what}: {n} task(s). Proceed? [y/N] ", err=True, nl=False)
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        if not answer or not sys.stdin.isatty():
            click.echo("", err=True)  # end the prompt line when no one typed Enter
        raise Aborted()


class Aborted(Exception):
    """The user did not confirm: nothing changed."""


def _changed(state: State, verb: str, ids: list[int]) -> None:
    if state.out.json:
        state.out.data({verb: ids, "count": len(ids)})
    else:
        shown = " ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
        state.out.line(f"{verb} {len(ids)} task(s)" + (f": {shown}" if ids else ""))


# --- commands -----------------------------------------------------------------


def load_app(module: str, **settings: Any) -> Any:
    """Import a user's module and return its app with the module's MsgQ classes.

    The module may define a `Tasker` (used as is, with its classes added);
    otherwise a new app is made from `settings` and the environment.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module!r}: {exc}") from None
    apps = [v for v in vars(mod).values() if isinstance(v, Tasker)]
    classes = classes_in(mod)
    given = {k: v for k, v in settings.items() if v is not None}
    if len(apps) > 1:
        raise ConfigurationError(f"{module} defines {len(apps)} Tasker apps; keep one")
    if apps and not given:
        app = apps[0]
    else:
        url, broker = given.pop("database_url", None), given.pop("broker_url", None)
        app = Tasker(url, broker=broker, **given)
    if apps and given:
        app.registry.register_all(apps[0].registry)
    for cls in classes:
        if app.registry.find(cls.topic) is not cls:
            app.registry.register(cls)
    if not len(app.registry):
        raise ConfigurationError(f"{module} defines no MsgQ classes")
    return app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="TASKER_DATABASE_URL",
    metavar="URL",
    help="Database URL [env TASKER_DATABASE_URL; default sqlite:///tasker.db].",
)
@click.option(
    "--broker-url",
    envvar="TASKER_BROKER_URL",
    metavar="URL",
    help="kombu broker URL [env TASKER_BROKER_URL].",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON for scripts.")
@click.pass_context
def cli(
    ctx: click.Context, database_url: str | None, broker_url: str | None, as_json: bool
) -> None:
    """tasker: background tasks with the database as the source of truth."""
    state = State(database_url, broker_url, as_json)
    ctx.obj = state
    ctx.call_on_close(state.close)


@cli.command()
@click.argument("module")
@click.option("--just-worker", is_flag=True, help="Consume only; never race for master.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@pass_state
def run(
    state: State, module: str, just_worker: bool, metrics_port: int | None, verbose: bool
) -> None:
    """Run an instance serving the MsgQ classes of MODULE (e.g. myapp.tasks)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )
    if not verbose:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    app = load_app(module, database_url=state.database_url, broker_url=state.broker_url)
    if metrics_port is not None:
        from tasker.metrics import start_exporter

        start_exporter(app, metrics_port)
    sys.exit(app.run(master=False if just_worker else None))


@cli.command()
@click.argument("topic")
@click.argument("payload", metavar="JSON")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds per run.")
@click.option("--retry", type=click.IntRange(min=1), help="Runs allowed.")
@click.option(
    "--exec-after",
    type=WHEN,
    metavar="WHEN",
    help="Not before: ISO datetime, or a delay like 30s, 5m.",
)
@pass_state
def publish(
    state: State,
    topic: str,
    payload: str,
    timeout: float | None,
    retry: int | None,
    exec_after: dt.datetime | dt.timedelta | None,
) -> None:
    """Publish one task of TOPIC with JSON input; prints its id."""
    task_id = admin.publish(
        state.app, topic, payload, timeout=timeout, retry=retry, exec_after=exec_after
    )
    state.out.data({"id": task_id}) if state.out.json else state.out.line(str(task_id))


@cli.command()
@click.option("--topic")
@click.option("--status", type=click.Choice(STATUSES), multiple=True, help="Repeat for several.")
@click.option("--since", type=WHEN, help="Created at/after: ISO datetime or duration ago.")
@click.option("--until", type=WHEN, help="Created before: ISO datetime or duration ago.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@pass_state
def tasks(
    state: State, topic: str | None, status: tuple[str, ...], since: Any, until: Any, limit: int
) -> None:
    """List the newest tasks."""
    rows = admin.list_tasks(
        state.app, topic=topic, status=list(status) or None, since=since, until=until, limit=limit
    )
    if state.out.json:
        state.out.data(rows)
        return
    cols = ["id", "topic", "status", "retry", "attempts", "created", "finished", "term"]
    state.out.table(cols, [[r[c] for c in cols] for r in rows])


@cli.command()
@click.argument("task_id", metavar="ID", type=int)
@pass_state
def show(state: State, task_id: int) -> None:
    """Every column of one task, with its log and error log."""
    row = admin.get_task(state.app, task_id)
    if state.out.json:
        state.out.data(row)
        return
    long = ("input", "result", "worker_fqdn", "log", "errlog")
    width = max(len(k) for k in row)
    for k, v in row.items():
        if k not in long:
            state.out.line(f"{k.ljust(width)}  {_cell(v)}")
    for k in long:
        text = (row.get(k) or "").rstrip("\n")
        state.out.line(f"\n{k}:" + ("" if text else " -"))
        for line in text.splitlines():
            state.out.line(f"  {line}")


@cli.command()
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@click.option(
    "--status",
    type=click.Choice(["failed", "success"]),
    multiple=True,
    help="Retry every task in this status (repeat for both).",
)
@click.option("--topic", help="With --status: only this topic.")
@click.option("--since", type=WHEN, help="With --status: finished at/after this.")
@click.option(
    "--runs", type=click.IntRange(min=1), default=None, help="Runs the tasks get (default 3)."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def retry(
    state: State,
    ids: tuple[int, ...],
    status: tuple[str, ...],
    topic: str | None,
    since: Any,
    runs: int | None,
    yes: bool,
) -> None:
    """Put failed (or success) tasks back to pending: by ID, or all with --status."""
    if not ids and not status:
        raise click.UsageError("give task ids or --status failed")
    if ids and (status or topic or since):
        raise click.UsageError("give task ids or --status/--topic/--since, not both")
    kw: dict[str, Any] = {"status": list(status), "topic": topic, "since": since} if status else {}
    if status or len(ids) > 1:
        confirm("retry", admin.count_retry(state.app, list(ids) or None, **kw), yes)
    moved = admin.retry(state.app, list(ids) or None, runs=runs, **kw)
    if ids and not moved:
        raise TaskerError(f"nothing retried: task(s) {_list(ids)} missing or not finished")
    _changed(state, "retried", moved)


@cli.command()
@click.argument("ids", metavar="ID...", nargs=-1, required=True, type=int)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def cancel(state: State, ids: tuple[int, ...], yes: bool) -> None:
    """Cancel pending/retry tasks (they become failed, errlog says cancelled)."""
    if len(ids) > 1:
        confirm("cancel", admin.count_cancel(state.app, list(ids)), yes)
    moved = admin.cancel(state.app, list(ids))
    if not moved:
        raise TaskerError(f"nothing cancelled: task(s) {_list(ids)} missing or not pending/retry")
    _changed(state, "cancelled", moved)


@cli.command()
@click.option("--older-than", type=DURATION, required=True, help="Finished longer ago: 7d, 12h.")
@click.option(
    "--status",
    type=click.Choice(["success", "failed"]),
    multiple=True,
    help="Which finished tasks (default success; repeat for both).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=admin.PURGE_BATCH,
    show_default=True,
    help="Rows deleted per transaction.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def purge(
    state: State, older_than: dt.timedelta, status: tuple[str, ...], batch: int, yes: bool
) -> None:
    """Delete finished tasks that finished longer ago than --older-than."""
    statuses = list(status) or ["success"]
    confirm("purge", admin.count_purge(state.app, older_than, statuses), yes)
    n = admin.purge(state.app, older_than, statuses, batch=batch)
    if state.out.json:
        state.out.data({"purged": n})
    else:
        state.out.line(f"purged {n} task(s)")


@cli.command()
@pass_state
def status(state: State) -> None:
    """Master, term, instances, and task counts by topic and status."""
    s = admin.status(state.app)
    out = state.out
    if out.json:
        out.data(s)
        return
    if s["master_instance_id"] is None:
        out.line(f"master: none (term {s['term']})")
    else:
        pid = s["master_pid"] if s["master_pid"] is not None else "?"
        live = "live" if s["lease_live"] else "EXPIRED"
        out.line(
            f"master: instance {s['master_instance_id']} on {s['master_fqdn']} (pid {pid}), "
            f"term {s['term']}, lease renewed {_ago(s['lease_age_s'])} ({live})"
        )
    alive = sum(1 for i in s["instances"] if i["alive"])
    out.line(f"instances: {alive} alive of {len(s['instances'])}")
    rows = []
    for topic, by_status in sorted(s["counts"].items()):
        rows.append(
            [topic, *(by_status.get(st, 0) for st in STATUSES), s["oldest_due_s"].get(topic)]
        )
    if rows:
        out.table(["topic", *STATUSES, "oldest due (s)"], rows)
    else:
        out.line("no tasks")


@cli.command()
@pass_state
def instances(state: State) -> None:
    """Every instance: id, host, pid, topics, heartbeat."""
    rows = admin.instances(state.app)
    if state.out.json:
        state.out.data(rows)
        return
    state.out.table(
        ["id", "fqdn", "pid", "master", "alive", "heartbeat", "topics"],
        [
            [
                r["id"],
                r["fqdn"],
                r["pid"],
                "yes" if r["is_master"] else "",
                "yes" if r["alive"] else "no",
                _ago(r["heartbeat_age_s"]),
                ",".join(sorted(r["topics"])),
            ]
            for r in rows
        ],
    )


def _list(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids))


# --- entry point --------------------------------------------------------------


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"tasker: {message}", err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI; errors are one line on stderr, never a traceback."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="tasker", standalone_mode=False
        )
    except (click.exceptions.Abort, Aborted):
        _fail("aborted: nothing changed")
    except click.ClickException as exc:
        _fail(_redacted(exc.format_message()), exc.exit_code)
    except TaskerError as exc:
        message = str(exc)
        if "no such table" in message or ('relation "' in message and "does not exist" in message):
            message += " (is the schema there? run: alembic upgrade head)"
        _fail(_redacted(message))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]*@")


def _redacted(text: str) -> str:
    """Hide any password of a URL that slipped into a message."""
    return _URL_PASSWORD.sub(r"\1***@", text)


if __name__ == "__main__":
    main()
