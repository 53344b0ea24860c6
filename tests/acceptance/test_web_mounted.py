"""The dashboard mounted under `/ops` in a Starlette host app served by
uvicorn, the host's lifespan running an instance (`app.lifespan`): driven
in headless Chromium, every link and asset stays under `/ops`, the live
counts refresh without the host running the dashboard's startup, and an
action (sign in, pause a topic) works and redirects under `/ops`."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import tasker.web
from tasker import Context, MsgQ, Tasker, admin
from tests.acceptance.browser import chromium
from tests.asgi_thread import serving
from tests.waiting import wait_for

TOKEN = "mounted-token-0123456789abcdef"
pytestmark = [pytest.mark.acceptance, pytest.mark.pg]


class Ping(MsgQ):
    topic = "ops.ping"
    spec = 0.1
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return {"n": self.n}


URLS = """return [
  ...[...document.querySelectorAll('a[href]')].map(e => e.href),
  ...[...document.querySelectorAll('link[href]')].map(e => e.href),
  ...[...document.querySelectorAll('script[src]')].map(e => e.src),
  ...[...document.querySelectorAll('form[action]')].map(e => e.action),
  ...[...document.querySelectorAll('[hx-get]')]
    .map(e => new URL(e.getAttribute('hx-get'), location.href).href),
]"""


def _counts(b) -> str:  # type: ignore[no-untyped-def]
    script = "const c = document.querySelector('#counts'); return c ? c.innerText : ''"
    return " ".join(str(b.execute_script(script)).split())


def _topic_row(b, topic: str) -> str:  # type: ignore[no-untyped-def]
    script = "const r = document.querySelector(arguments[0]); return r ? r.textContent : ''"
    return str(b.execute_script(script, f"#topics tr[data-topic='{topic}']"))


def test_dashboard_under_ops_in_chromium(pg_url: str, tmp_path: Path) -> None:
    app = Tasker(pg_url, broker=f"filesystem://{tmp_path / 'broker'}")
    app.register(Ping)
    first = app.publish_many([Ping(n=i) for i in range(2)])
    dashboard = tasker.web.create_app(app, allow_actions=True, token=TOKEN, refresh_s=0.3)
    host = Starlette(
        routes=[Route("/", lambda _r: PlainTextResponse("host")), Mount("/ops", dashboard)],
        lifespan=app.lifespan,
    )
    shots = tmp_path / "screenshots"
    shots.mkdir()
    b = chromium()
    try:
        with serving(host) as base:
            ops = base + "/ops"
            for task_id in first:
                assert app.result(task_id, timeout=20).success
            b.get(ops + "/")
            wait_for(lambda: "ops.ping" in _counts(b), 10, "the overview's counts")
            assert b.execute_script("return typeof htmx") == "object"  # its asset loaded
            urls = b.execute_script(URLS)
            assert urls and all(u.startswith(ops + "/") or u == ops for u in urls), urls
            b.save_screenshot(str(shots / "overview.png"))

            # Counts change in place (htmx, no reload) after publishing.
            b.execute_script("window.notReloaded = true")
            before = _counts(b)
            more = app.publish_many([Ping(n=i) for i in range(3)])
            for task_id in more:
                assert app.result(task_id, timeout=20).success
            wait_for(lambda: _counts(b) != before and "5" in _counts(b).split(), 15,
                     "the live counts to show 5 successes", every=0.2)  # fmt: skip
            assert b.execute_script("return window.notReloaded") is True

            # Links lead under /ops: the nav, then a task.
            b.find_element(By.LINK_TEXT, "Tasks").click()
            wait_for(lambda: b.current_url.startswith(ops + "/tasks"), 10, "the task list")
            wait_for(lambda: b.find_elements(By.CSS_SELECTOR, "#tasks tbody tr a"), 10, "rows")
            b.find_element(By.CSS_SELECTOR, "#tasks tbody tr a").click()
            wait_for(lambda: b.current_url.startswith(ops + "/tasks/"), 10, "the task page")
            assert all(u.startswith(ops) for u in b.execute_script(URLS))

            # An action: sign in (redirected under /ops), pause the topic.
            b.get(ops + "/login")
            b.find_element(By.ID, "token").send_keys(TOKEN)
            b.find_element(By.ID, "sign-in-submit").click()
            wait_for(lambda: "Sign out" in b.page_source, 10, "signed in")
            assert b.current_url == ops + "/"
            b.get(ops + "/topics")
            wait_for(lambda: "ops.ping" in _topic_row(b, "ops.ping"), 10, "the topic row")
            pause = "#topics tr[data-topic='ops.ping'] button.pause"
            b.find_element(By.CSS_SELECTOR, pause).click()
            wait_for(lambda: "paused" in _topic_row(b, "ops.ping"), 10, "ops.ping marked paused")
            assert b.current_url == ops + "/topics"
            assert "ops.ping" in admin.status(app)["paused"]
            b.save_screenshot(str(shots / "topics-paused.png"))
    finally:
        b.quit()
        app.close()
