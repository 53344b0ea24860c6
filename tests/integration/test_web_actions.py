"""Dashboard actions in process, on SQLite and PostgreSQL: the Starlette app
is called as ASGI (no server, no HTTP client), so status codes, bodies and
headers are what a browser or script would get."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tasker import Tasker, admin
from tasker.web.server import create_app

TOKEN = "t" * 32


def call(
    web: Any, method: str, path: str, query: str = "", body: Any = None, bearer: bool = True
) -> tuple[int, dict[str, str], Any]:
    """(status, headers with lowercase names, parsed JSON or text) of one request."""
    raw = b"" if body is None else json.dumps(body).encode()
    headers = [(b"host", b"127.0.0.1")]
    if bearer:
        headers.append((b"authorization", f"Bearer {TOKEN}".encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(web(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    got = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    decoded = json.loads(text) if "json" in got.get("content-type", "") else text.decode()
    return start["status"], got, decoded


@pytest.fixture
def web(app: Tasker) -> Any:
    return create_app(app, allow_actions=True, token=TOKEN)


def held_key(app: Tasker) -> tuple[int, int]:
    """(a failed task, the live task now holding its unique key)."""
    old = admin.publish(app, "t.key", {"n": 1}, unique_key="k")
    assert admin.cancel(app, [old]) == [old]  # pending -> failed
    live = admin.publish(app, "t.key", {"n": 2}, unique_key="k")
    assert live != old
    return old, live


def test_retrying_a_task_whose_key_is_held_names_the_holder(app: Tasker, web: Any) -> None:
    old, live = held_key(app)
    status, _, body = call(web, "POST", f"/api/tasks/{old}/retry")
    assert status == 409
    assert body == {"error": f"task {old} was not retried: task {live} holds its unique key"}
    assert admin.get_task(app, old)["status"] == "failed"
    other = admin.publish(app, "t.free", {"n": 3})
    status, _, body = call(web, "POST", f"/api/tasks/{other}/retry")  # pending: the old reason
    assert (status, body["error"]) == (
        409, f"task {other} is pending: only failed or success tasks can be retried"
    )  # fmt: skip


def test_the_bulk_retry_count_leaves_out_the_tasks_it_would_skip(app: Tasker, web: Any) -> None:
    held_key(app)
    free = admin.publish(app, "t.key", {"n": 3})
    admin.cancel(app, [free])
    dry = {"status": ["failed"], "topic": "t.key", "dry_run": True}
    status, _, body = call(web, "POST", "/api/tasks/retry", body=dry)
    assert (status, body) == (200, {"count": 1})
    status, _, page = call(web, "GET", "/tasks/retry", query="status=failed&topic=t.key")
    assert status == 200 and "Retry 1 task(s) matching this filter?" in page
    status, _, body = call(web, "POST", "/api/tasks/retry",
                           body={"status": ["failed"], "topic": "t.key"})  # fmt: skip
    assert (status, body) == (200, {"count": 1})


@pytest.mark.parametrize(
    ("method", "path", "bearer", "want"),
    [
        ("GET", "/api/status", True, 200),
        ("GET", "/api/tasks/999999", True, 404),
        ("POST", "/api/tasks/1/retry", False, 401),
        ("GET", "/", False, 200),
        ("GET", "/nowhere", False, 404),
    ],
)
def test_every_response_says_nosniff(
    web: Any, method: str, path: str, bearer: bool, want: int
) -> None:
    status, headers, _ = call(web, method, path, bearer=bearer)
    assert status == want
    assert headers.get("x-content-type-options") == "nosniff"
