"""`tasker web` against real PostgreSQL: driven in headless Chromium with a
running cluster, and probed with plain HTTP for the token, origin and bad-input
rules. Screenshots of every page are saved under the test's tmp dir."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tasker import Tasker, admin
from tests.acceptance.browser import chromium
from tests.acceptance.cluster import Cluster, wait_for
from tests.acceptance.web_server import WebServer
from tests.fixtures.web_jobs import FailsOnce, Quick
from tests.waiting import stays

TOKEN = "test-token-0123456789abcdef"
pytestmark = [pytest.mark.acceptance, pytest.mark.pg]


def _rows(b) -> list[str]:  # type: ignore[no-untyped-def]
    """The task rows' texts, read in one script: htmx swaps the rows while
    they are polled, which made a row found first stale when read after."""
    script = "return [...document.querySelectorAll('#tasks tbody tr')].map(r => r.innerText)"
    return [" ".join(text.split()) for text in b.execute_script(script)]


def test_filter_open_bulk_retry_and_watch_them_succeed(
    pg_cluster: Cluster, pg_url: str, amqp_url: str, tmp_path: Path
) -> None:
    app = Tasker(pg_url, broker=amqp_url)
    app.register(FailsOnce, Quick)
    failing = app.publish_many([FailsOnce(n=i) for i in range(4)])
    quick = app.publish_many([Quick(n=i) for i in range(3)])
    app.close()
    (pid,) = pg_cluster.start(1, module="tests.fixtures.web_jobs")
    wait_for(
        lambda: (
            pg_cluster.counts(failing)["failed"] == 4 and pg_cluster.counts(quick)["success"] == 3
        ),
        30,
        "4 failed and 3 successful tasks",
    )
    shots = tmp_path / "screenshots"
    shots.mkdir()
    web = WebServer(pg_url, tmp_path, "--allow-actions", "--refresh", "0.5", TASKER_WEB_TOKEN=TOKEN)
    b = chromium()
    try:
        b.get(web.base + "/")
        wait_for(lambda: "t.failonce" in b.find_element(By.ID, "counts").text, 10, "counts")
        wait_for(lambda: socket.getfqdn() in b.page_source, 10, "the master's host")
        b.save_screenshot(str(shots / "overview.png"))

        # Filter to failed tasks with the form.
        b.get(web.base + "/tasks")
        Select(b.find_element(By.NAME, "status")).select_by_value("failed")
        b.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait_for(lambda: "status=failed" in b.current_url, 10, "the filtered list")
        rows = _rows(b)
        assert len(rows) == 4 and all(" failed " in f" {r} " for r in rows), rows
        shown = {int(r.split()[0]) for r in rows}
        assert shown == set(failing)
        b.save_screenshot(str(shots / "tasks.png"))

        # Open one: its attempt, host and error are there.
        b.find_element(By.CSS_SELECTOR, "#tasks tbody tr a").click()
        wait_for(lambda: "/tasks/" in b.current_url, 10, "the task page")
        attempts = b.find_element(By.ID, "attempts").text
        assert "first run of" in attempts and "RuntimeError" in attempts, attempts
        assert '"n":' in b.page_source
        b.save_screenshot(str(shots / "task.png"))

        # Sign in, then bulk-retry the filtered set after confirming the count.
        b.get(web.base + "/login")
        b.find_element(By.ID, "token").send_keys(TOKEN)
        b.find_element(By.ID, "sign-in-submit").click()
        wait_for(lambda: "Sign out" in b.page_source, 10, "signed in")
        b.get(web.base + "/tasks?topic=t.failonce&status=failed")
        b.find_element(By.ID, "bulk-retry").click()
        wait_for(lambda: b.find_elements(By.ID, "confirm-text"), 10, "the confirm page")
        assert "Retry 4 task(s)" in b.find_element(By.ID, "confirm-text").text
        b.save_screenshot(str(shots / "confirm.png"))
        b.find_element(By.ID, "confirm").click()
        wait_for(lambda: b.find_elements(By.ID, "done"), 10, "the result page")
        assert b.find_element(By.ID, "done").text == "Retried 4 task(s)."

        # The list refreshes in place (no reload: the marker survives) as they succeed.
        b.get(web.base + f"/tasks?topic={quote('t.failonce')}")
        b.execute_script("window.notReloaded = true")
        wait_for(
            lambda: (r := _rows(b)) and len(r) == 4 and all(" success " in f" {x} " for x in r),
            30,
            "the retried tasks shown as success",
            every=0.2,
        )
        assert b.execute_script("return window.notReloaded") is True
        assert pg_cluster.counts(failing)["success"] == 4
        b.save_screenshot(str(shots / "tasks-after-retry.png"))

        b.get(web.base + "/instances")
        assert str(pid) in b.find_element(By.ID, "instances").text
        b.save_screenshot(str(shots / "instances.png"))
        b.get(web.base + "/topics")
        wait_for(lambda: "t.quick" in b.find_element(By.ID, "topics").text, 10, "topics")
        b.save_screenshot(str(shots / "topics.png"))
        assert web.get("/api/topics")[0] == 200
        data = web.get("/api/topics")[1]
        quick_stats = next(t for t in data["topics"] if t["topic"] == "t.quick")
        assert quick_stats["runs_sampled"] == 3 and quick_stats["p50_s"] is not None
        _pause_from_the_topics_page(b, pg_cluster, pg_url, amqp_url, shots)
        b.save_screenshot(str(shots / "topics-resumed.png"))
    finally:
        b.quit()
        web.close()
    assert {p.name for p in shots.iterdir()} >= {"overview.png", "tasks.png", "task.png"}
    assert TOKEN not in web.output()


def _row(b, topic: str) -> str:  # type: ignore[no-untyped-def]
    """The row's text, read in one script: htmx replaces the rows every 2 s."""
    script = "const r = document.querySelector(arguments[0]); return r ? r.textContent : ''"
    return str(b.execute_script(script, f"#topics tr[data-topic='{topic}']"))


def _click(b, selector: str) -> None:  # type: ignore[no-untyped-def]
    """Click, again when htmx swapped the element out between finding and clicking."""

    def once() -> bool:
        try:
            b.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(once, 10, f"a click on {selector}")


def _pause_from_the_topics_page(b, c: Cluster, pg_url: str, amqp_url: str, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """Pause t.quick with its button: marked paused, and a running instance
    leaves its new task pending while another topic's runs; Resume runs it."""
    _click(b, "#topics tr[data-topic='t.quick'] button.pause")
    wait_for(lambda: "paused" in _row(b, "t.quick"), 10, "t.quick marked paused")
    assert "paused" not in _row(b, "t.failonce")
    b.save_screenshot(str(shots / "topics-paused.png"))
    app = Tasker(pg_url, broker=amqp_url)
    try:
        held = app.publish(Quick(n=100))
        control = app.publish(FailsOnce(n=100))
    finally:
        app.close()
    wait_for(lambda: c.all_terminal([control]), 20, "the unpaused topic's task")
    stays(lambda: c.counts([held])["pending"] == 1, 0.5, "a paused topic was dispatched")
    _click(b, "#topics tr[data-topic='t.quick'] button.resume")
    wait_for(lambda: "active" in _row(b, "t.quick"), 10, "t.quick marked active")
    wait_for(lambda: c.counts([held])["success"] == 1, 20, "the resumed topic's task")


BAD_QUERIES = [
    [("limit", "abc")],
    [("limit", "0")],
    [("limit", "100000000000000000000000")],
    [("since", "yesterday")],
    [("until", "2026-13-01")],
    [("since", "99999999999w")],
    [("status", "bogus")],
    [("q", "1;DROP TABLE task")],
    [("q", "1 OR 1=1")],
    [("before", "-5")],
    [("topic", "' OR 1=1 --")],
    [("topic", "\x00")],
    [("nope", "1")],
    [("limit", "1"), ("limit", "2")],
]


def test_token_origin_and_bad_input_over_plain_http(pg_url: str, tmp_path: Path) -> None:
    app = Tasker(pg_url, broker=f"filesystem://{tmp_path / 'broker'}")
    ids = [admin.publish(app, "t.web", {"n": i}) for i in range(3)]
    admin.cancel(app, ids[:2])  # two failed tasks to retry
    admin.publish(app, ODD_TOPIC, {})
    app.close()
    web = WebServer(pg_url, tmp_path, "--allow-actions", TASKER_WEB_TOKEN=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        _pause_over_plain_http(web, bearer)
        body = {"status": "failed"}
        assert web.request("POST", "/api/tasks/retry", body)[0] == 401
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert web.request("POST", "/api/tasks/retry", body, wrong)[0] == 401
        evil = {**bearer, "Origin": "http://evil.example"}
        assert web.request("POST", "/api/tasks/retry", body, evil)[0] == 403
        cross = {**bearer, "Sec-Fetch-Site": "cross-site"}
        assert web.request("POST", "/api/tasks/retry", body, cross)[0] == 403
        dry = web.request("POST", "/api/tasks/retry", {**body, "dry_run": True}, bearer)
        assert dry == (200, {"count": 2})
        assert web.request("POST", "/api/tasks/retry", body, bearer) == (200, {"count": 2})
        assert web.request("POST", f"/api/tasks/{ids[0]}/cancel", None, bearer)[0] == 200
        status, err = web.request("POST", f"/api/tasks/{ids[0]}/cancel", None, bearer)
        assert status == 409 and "failed" in err["error"]
        assert web.request("POST", "/api/tasks/99999/retry", None, bearer)[0] == 404
        assert web.request("POST", "/api/tasks/retry", {"status": "pending"}, bearer)[0] == 400
        assert web.request("POST", "/api/tasks/retry", None, bearer, raw=b"{nope")[0] == 400

        # Forms: signed-in session cookie, same origin, csrf field.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert web.request("POST", "/tasks/retry", None, form, raw=b"status=failed")[0] == 401
        bad_login = web.request("POST", "/login", None, form, raw=b"token=wrong")
        assert bad_login[0] == 401
        cookie = {**form, "Cookie": f"tasker_session={_session(TOKEN)}"}
        assert web.request("POST", "/tasks/retry", None, cookie, raw=b"status=failed")[0] == 403
        csrf = f"status=failed&csrf={_csrf(TOKEN)}".encode()
        far = {**cookie, "Origin": "http://evil.example"}
        assert web.request("POST", "/tasks/retry", None, far, raw=csrf)[0] == 403
        status, page = web.request("POST", "/tasks/retry", None, cookie, raw=csrf)
        assert status == 200 and "Retried 1 task(s)." in page

        for query in BAD_QUERIES:
            for path in ("/api/tasks", "/tasks"):
                status, answer = web.get(f"{path}?{urlencode(query)}")
                text = answer["error"] if isinstance(answer, dict) else answer
                assert status == 400, (path, query, status)
                assert "Traceback" not in text and len(text) < 8000
        for path in ("/tasks/abc", "/api/tasks/abc", "/api/tasks/123456789012345678901234"):
            assert web.get(path)[0] == 400, path
        assert web.get("/api/tasks/424242")[0] == 404
        assert web.get("/", Host="evil.example")[0] == 400  # DNS rebinding

        # Live fragments answer 304 to a browser that holds the current version.
        status, _ = web.get("/live/overview")
        etag = _etag(web, "/live/overview")
        assert status == 200 and web.get("/live/overview", **{"If-None-Match": etag})[0] in (
            200,
            304,
        )
        etag = _etag(web, "/live/tasks?status=failed")
        assert web.get("/live/tasks?status=failed", **{"If-None-Match": etag})[0] == 304

        assert web.request("POST", f"/api/tasks/{ids[2]}/cancel", None, bearer)[0] == 200
        purge = {"older_than": "0s", "status": ["failed"]}
        assert web.request("POST", "/api/tasks/purge", purge)[0] == 401
        assert web.request("POST", "/api/tasks/purge", {"older_than": "soon"}, bearer)[0] == 400
        status, done = web.request("POST", "/api/tasks/purge", purge, bearer)
        assert status == 200 and done["purged"] >= 1
        assert web.get(f"/api/tasks/{ids[2]}")[0] == 404  # failed, so purged
    finally:
        web.close()
    assert TOKEN not in web.output()

    # Without --allow-actions there is nothing to post to, and no token is printed.
    ro = WebServer(pg_url, tmp_path)
    try:
        assert ro.request("POST", "/api/tasks/retry", {"status": "failed"}, bearer)[0] in (404, 405)
        assert ro.get("/login")[0] == 404
        assert ro.request("POST", "/api/topics/t.web/pause", None, bearer)[0] in (404, 405)
        assert ro.request("POST", "/topics/pause", None, raw=b"topic=t.web")[0] in (404, 405)
        assert ro.get("/api/status")[0] == 200
    finally:
        ro.close()
    assert "token" not in ro.output().lower()


ODD_TOPIC = "odd/t\u00f6pic ?#%.."
BAD_TOPICS = ["nope", "%00", "%20", "x" * 201, "%0A", "", "%FF", "a%2F..%2Fb"]


def _paused(web: WebServer, topic: str) -> bool:
    return bool(
        next(t for t in web.get("/api/topics")[1]["topics"] if t["topic"] == topic)["paused"]
    )


def _pause_over_plain_http(web: WebServer, bearer: dict[str, str]) -> None:
    """Pause and resume through the API (token, origin, odd names, bad names) and the form."""
    url = "/api/topics/t.web/pause"
    assert web.request("POST", url)[0] == 401
    assert web.request("POST", url, None, {"Authorization": "Bearer wrong-token-123456"})[0] == 401
    assert web.request("POST", url, None, {**bearer, "Origin": "http://evil.example"})[0] == 403
    assert not _paused(web, "t.web") and 'class="badge paused"' not in web.get("/")[1]
    assert web.request("POST", url, None, bearer) == (200, {"topic": "t.web", "paused": True})
    assert _paused(web, "t.web") and web.get("/api/status")[1]["paused"] == ["t.web"]
    assert 'class="badge paused"' in web.get("/")[1]  # the overview marks it
    done = web.request("POST", "/api/topics/t.web/resume", None, bearer)
    assert done == (200, {"topic": "t.web", "paused": False}) and not _paused(web, "t.web")

    # Any topic text, percent-encoded; "/" may also come as it is.
    odd = quote(ODD_TOPIC, safe="")
    assert web.request("POST", f"/api/topics/{odd}/pause", None, bearer)[1]["topic"] == ODD_TOPIC
    assert _paused(web, ODD_TOPIC)
    raw_slash = quote(ODD_TOPIC, safe="/")
    assert web.request("POST", f"/api/topics/{raw_slash}/resume", None, bearer)[0] == 200
    assert not _paused(web, ODD_TOPIC)
    for bad in BAD_TOPICS:
        status, err = web.request("POST", f"/api/topics/{bad}/pause", None, bearer)
        assert status in (400, 404), (bad, status)
        assert "Traceback" not in err["error"] and len(err["error"]) < 200, err
    assert web.request("POST", "/api/topics/nope/pause", None, bearer)[0] == 404
    assert web.request("POST", "/api/topics/%00/pause", None, bearer)[0] == 400
    assert web.get("/api/status")[1]["paused"] == []

    # The form: signed-in cookie, same origin, csrf field; the topic is a field.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cookie = {**form, "Cookie": f"tasker_session={_session(TOKEN)}"}
    fields = urlencode({"topic": ODD_TOPIC, "csrf": _csrf(TOKEN)}).encode()
    assert web.request("POST", "/topics/pause", None, form, raw=fields)[0] == 401
    no_csrf = urlencode({"topic": ODD_TOPIC}).encode()
    assert web.request("POST", "/topics/pause", None, cookie, raw=no_csrf)[0] == 403
    far = {**cookie, "Origin": "http://evil.example"}
    assert web.request("POST", "/topics/pause", None, far, raw=fields)[0] == 403
    status, page = web.request("POST", "/topics/pause", None, cookie, raw=fields)  # 303 to /topics
    assert status == 200 and 'class="small resume"' in page and _paused(web, ODD_TOPIC)
    nobody = urlencode({"topic": "nobody", "csrf": _csrf(TOKEN)}).encode()
    assert web.request("POST", "/topics/pause", None, cookie, raw=nobody)[0] == 404
    assert web.request("POST", "/topics/resume", None, cookie, raw=fields)[0] == 200
    assert not _paused(web, ODD_TOPIC)


def _etag(web: WebServer, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(web.base + path, timeout=10) as resp:
        return str(resp.headers["ETag"])


def _session(token: str) -> str:
    from tasker.web.guard import Guard

    return Guard(token).session_value


def _csrf(token: str) -> str:
    from tasker.web.guard import Guard

    return Guard(token).csrf_value
