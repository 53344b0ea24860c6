"""The web dashboard, `tasker web`: pages, JSON API and actions over `tasker.admin`.

Needs the `web` extra (`pip install "tasker[web]"`); importing this package
alone does not, so the CLI can say what is missing. For an ASGI host
(FastAPI, Starlette): `create_app(app)` is the dashboard to mount under
any path, `lifespan(app)` runs an instance for the server's lifetime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasker.app import Tasker

__all__ = ["create_app", "lifespan"]


def lifespan(app: Tasker, *, master: bool | None = None, timeout: float | None = None) -> Any:
    """An ASGI lifespan that runs an instance of `app` while the server runs:
    `FastAPI(lifespan=tasker.web.lifespan(app))`. It installs no signal
    handler and stops gracefully when the server shuts down (see
    `Tasker.running`; `master` and `timeout` as there)."""

    from tasker.runtime.embedded import Lifespan

    def of(_asgi_app: object) -> Lifespan:
        return Lifespan(lambda: app._instance(master), timeout)

    return of


def create_app(app: Tasker, **options: Any) -> Any:
    """The dashboard as a Starlette app (`tasker.web.server.create_app`)."""
    from tasker.web.server import create_app as make

    return make(app, **options)
