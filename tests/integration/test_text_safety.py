"""Text is stored safely whatever a user or a task gives (DESIGN 2).

A property test: arbitrary text, lone surrogates and NUL included, goes
through every text path of a real runtime in this process (`app.start()`),
on SQLite and on PostgreSQL: a payload field (`input`, published by
`publish` and by `admin.publish` of JSON text), `ctx.log` (`log`), an
exception message (`errlog`) and the return value (`result`). Read back with
`tasker.admin.get_task`, every stored text is valid UTF-8 without NUL, and
ordinary text (no NUL, no lone surrogate) is kept unchanged; other text keeps
every ordinary run, in order. Entries over 64 KiB are cut with a marker.

Shrinking is off: when the runtime itself stops writing (the failure this
guards against), every shrink step would wait out a timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tasker import Context, MsgQ, Tasker, admin, db
from tests.conftest import core_set_timings
from tests.textcheck import assert_cut, assert_keeps, assert_safe_text, is_ordinary

WAIT_S = 10.0


class Speak(MsgQ):
    """Logs its text, then returns it or raises it."""

    topic = "text.speak"
    spec = 0.1
    concurrency = 8
    timeout = 10.0
    retry = 1
    text: str
    mode: str = "return"

    def exec(self, ctx: Context, worker_id: int) -> object:
        ctx.log(self.text)
        if self.mode == "raise":
            raise RuntimeError(self.text)
        return {"text": self.text}


@pytest.fixture
def runtime(db_url: str, local_broker: str) -> Iterator[Tasker]:
    """One app running an instance in this process for the whole property test."""
    engine = db.make_engine(db_url)
    with db.transaction(engine) as conn:  # short beats: elected in ms, not seconds
        core_set_timings(conn, master_out_of_date_ms=1200, instance_heartbeat_ms=200)
    engine.dispose()
    app = Tasker(db_url, broker=local_broker)
    app.register(Speak)
    app.start()
    yield app
    app.close()


CHAR = st.one_of(
    st.characters(exclude_categories=()),  # any code point but a surrogate, NUL included
    st.characters(categories=["Cs"]),  # lone surrogates
    st.sampled_from(["\x00", "\udce9", "\ud800", "\u2028", "\r", "\\", "'", "é", "𝄞", "\ufeff"]),
)
TEXTS = st.lists(st.text(CHAR, max_size=200), min_size=1, max_size=4)


def _outcomes(app: Tasker, ids: list[int]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    rows = []
    for tid in ids:
        while (row := admin.get_task(app, tid))["status"] not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"task {tid} still {row['status']} after {WAIT_S:g}s: "
                    f"no outcome written for input {row['input'][:200]!r}"
                )
            time.sleep(0.02)
        rows.append(row)
    return rows


def _field(stored: str, what: str) -> str:
    """The `text` field of stored JSON (input or result)."""
    value = json.loads(stored)
    assert isinstance(value, dict) and isinstance(value.get("text"), str), f"{what}: {stored!r}"
    return value["text"]


def _assert_json_text(stored: str, text: str, what: str) -> None:
    assert_safe_text(stored, what)
    back = _field(stored, what)
    if is_ordinary(text):
        assert back == text, f"{what}: {text!r} came back as {back!r}"
    else:
        assert_keeps(back, text, what)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(texts=TEXTS)
@example(texts=["file caf\udce9.txt", "nul \x00 here", "plain ✓"])
@example(texts=["\udce9", "\x00", "", "\ud800\udc00"])
def test_any_text_is_stored_safely(runtime: Tasker, texts: list[str]) -> None:
    ids = []
    for text in texts:
        raw = json.dumps({"text": text, "mode": "return"}, ensure_ascii=False)
        ids.append(admin.publish(runtime, Speak.topic, raw))
        ids.append(runtime.publish(Speak(text=text, mode="raise")))
    rows = _outcomes(runtime, ids)
    for i, text in enumerate(texts):
        ok, bad = rows[2 * i], rows[2 * i + 1]
        for row in (ok, bad):
            _assert_json_text(row["input"], text, f"input of task {row['id']}")
            assert_safe_text(row["log"], f"log of task {row['id']}")
            assert_keeps(row["log"], text, f"log of task {row['id']}")
        assert ok["status"] == "success", ok["errlog"][:500]
        _assert_json_text(ok["result"], text, f"result of task {ok['id']}")
        assert bad["status"] == "failed"
        assert_safe_text(bad["errlog"], f"errlog of task {bad['id']}")
        assert "RuntimeError" in bad["errlog"]
        assert_keeps(bad["errlog"], text, f"errlog of task {bad['id']}")


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("a" * 60_000, None),
        ("é" * 30_000, None),
        ("a" * 200_000, (120e3, 150e3)),
        ("é𝄞" * 50_000, (60e3, 260e3)),
    ],
    ids=["60k-ascii", "30k-two-byte", "200k-ascii", "100k-mixed"],
)
def test_long_log_entry_is_kept_or_cut_with_a_marker(
    runtime: Tasker, text: str, cut: tuple[float, float] | None
) -> None:
    (row,) = _outcomes(runtime, [runtime.publish(Speak(text=text, mode="raise"))])
    assert_safe_text(row["log"], "log")
    if cut is None:
        assert text in row["log"], "an entry under 64 KiB was changed"
    else:
        assert_cut(row["log"], *cut, "log")


@pytest.mark.parametrize(
    ("text", "cut"),
    [("a" * 30_000, None), ("a" * 200_000, (120e3, 420e3))],
    ids=["30k", "200k"],
)
def test_long_errlog_entry_is_kept_or_cut_with_a_marker(
    runtime: Tasker, text: str, cut: tuple[float, float] | None
) -> None:
    (row,) = _outcomes(runtime, [runtime.publish(Speak(text=text, mode="raise"))])
    assert row["status"] == "failed"
    assert_safe_text(row["errlog"], "errlog")
    if cut is None:
        assert text in row["errlog"], "an entry under 64 KiB was changed"
    else:
        assert_cut(row["errlog"], *cut, "errlog")
        assert row["errlog"].startswith("[attempt 1 "), "the entry's head was cut"
