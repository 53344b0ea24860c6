"""`tasker run`: one instance serving a module's MsgQ classes."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from tasker.app import Tasker
from tasker.cli import logs
from tasker.cli.state import State, pass_state
from tasker.exceptions import ConfigurationError, TaskerError
from tasker.msgq import classes_in


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


@click.command()
@click.argument("module")
@click.option("--just-worker", is_flag=True, help="Consume only; never race for master.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDR",
    help="Address the metrics port binds (0.0.0.0: every interface).",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="TASKER_HEALTH_PORT",
    help="Serve /healthz (liveness) and /readyz (readiness) on this port.",
)
@click.option(
    "--health-host",
    "--health-addr",
    "health_host",
    default="127.0.0.1",
    show_default=True,
    envvar="TASKER_HEALTH_HOST",
    metavar="ADDR",
    help="Address the health port binds (0.0.0.0 for a kubelet's probes).",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    envvar="TASKER_LOG_FORMAT",
    help="text, or json: one JSON object a line (time, level, logger, message, task fields).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@pass_state
def run(
    state: State,
    module: str,
    just_worker: bool,
    metrics_port: int | None,
    metrics_host: str,
    health_port: int | None,
    health_host: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Run an instance serving the MsgQ classes of MODULE (e.g. myapp.tasks)."""
    logs.configure(log_format, verbose=verbose)
    app = load_app(module, database_url=state.database_url, broker_url=state.broker_url)
    if metrics_port is not None:
        from tasker.metrics import start_exporter

        try:
            start_exporter(app, metrics_port, metrics_host)
        except OSError as exc:
            raise TaskerError(
                f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
            ) from exc
    if health_port is not None:
        from tasker.runtime.health import start_health_server

        try:
            start_health_server(lambda: app.instance, health_port, health_host)
        except OSError as exc:
            raise TaskerError(f"cannot serve health on {health_host}:{health_port}: {exc}") from exc
    sys.exit(app.run(master=False if just_worker else None))
