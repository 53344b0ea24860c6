"""`tasker web`: serve the dashboard with uvicorn (the `web` extra)."""

from __future__ import annotations

import os
import secrets
from typing import Any

import click

TOKEN_ENV = "TASKER_WEB_TOKEN"
MIN_TOKEN_CHARS = 16
INSTALL_HINT = 'the dashboard needs the web extra: pip install "tasker[web]"'


def _loopback(host: str) -> bool:
    # IPv4 only: Starlette's host check cannot read an IPv6 Host header.
    return host in ("127.0.0.1", "localhost") or host.startswith("127.")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--allow-actions",
    is_flag=True,
    help=f"Enable retry, cancel, bulk retry, purge, pause and resume (forms and API; "
    f"token from {TOKEN_ENV}).",
)
@click.option(
    "--refresh",
    type=click.FloatRange(0.5, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between two reads of the counts, shared by every viewer.",
)
@click.pass_obj
def web(state: Any, host: str, port: int, allow_actions: bool, refresh: float) -> None:
    """Serve the web dashboard (overview, tasks, topics, instances, JSON API)."""
    try:
        import uvicorn

        from tasker.web import server
    except ImportError as exc:
        raise click.ClickException(f"{INSTALL_HINT} ({exc.name} is missing)") from None
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    generated = allow_actions and token is None
    if generated:
        token = secrets.token_urlsafe(32)
    if allow_actions and token is not None and len(token) < MIN_TOKEN_CHARS:
        raise click.ClickException(
            f"{TOKEN_ENV} is too short (at least {MIN_TOKEN_CHARS} characters)"
        )
    local = _loopback(host)
    asgi = server.create_app(
        state.app,
        allow_actions=allow_actions,
        token=token,
        refresh_s=refresh,
        allowed_hosts=(*server.LOOPBACK_HOSTS, host) if local else ("*",),
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"tasker web: http://{shown}:{port}/", err=True)
    if allow_actions:
        if generated:
            click.echo(f"actions on; API token for this run ({TOKEN_ENV} unset): {token}", err=True)
        else:
            click.echo(f"actions on; API token from {TOKEN_ENV}", err=True)
        if not local:
            click.echo(
                "warning: actions are reachable from the network; use TLS in front", err=True
            )
    uvicorn.run(asgi, host=host, port=port, log_level="warning", server_header=False)
