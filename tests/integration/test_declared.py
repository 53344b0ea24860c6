"""What instances declare per topic (settings, payload schema) and what a
publisher without the classes does with it, on SQLite and PostgreSQL:
the declaring statement, `publish_raw` and `tasker publish`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tasker import Tasker, admin, pipelines, store
from tasker.exceptions import PayloadError
from tasker.schema import task, topic
from tests.fixtures.declared import MathAdd, Tagged


def declare(app: Tasker, *classes: Any) -> None:
    with app.transaction() as conn:
        store.topic_declare_many(conn, rows=[pipelines.declaration(c) for c in classes])


def topic_row(app: Tasker, name: str) -> Any:
    with app.transaction() as conn:
        return conn.execute(sa.select(topic).where(topic.c.name == name)).one()


def task_count(app: Tasker) -> int:
    with app.transaction() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(task)).scalar_one())


def test_an_instance_declares_what_it_serves_at_start(app: Tasker) -> None:
    app.register(MathAdd, Tagged)
    admin.pause(app, "math.add")
    instance = app.start(master=False)
    try:
        row = topic_row(app, "math.add")
        assert json.loads(row.settings) == {
            "timeout_s": 7.5, "retry": 2, "priority": 3, "result_topic": None
        }  # fmt: skip
        schema = json.loads(topic_row(app, "image.tagged").payload_schema)
        props = schema["$defs"]["TaggedPayload"]["properties"]
        assert props["tags"] == {"type": "array", "items": {"type": "string"}}
        assert row.paused  # what the declaration does not own is left alone
    finally:
        instance.stop(0)


def test_declaring_again_is_idempotent_and_the_last_writer_wins(app: Tasker) -> None:
    declare(app, MathAdd)
    first = topic_row(app, "math.add")
    declare(app, MathAdd)
    assert topic_row(app, "math.add") == first

    class Newer(MathAdd):
        topic = "math.add"
        retry = 5
        extra: str = ""

    declare(app, Newer)
    row = topic_row(app, "math.add")
    assert json.loads(row.settings)["retry"] == 5
    assert "extra" in row.payload_schema


def test_publish_raw_refuses_what_the_declared_schema_refuses(app: Tasker) -> None:
    declare(app, Tagged)
    refused = r"^image\.tagged: \$\.tags\[1\]: 3 is not of type 'string'$"
    with pytest.raises(PayloadError, match=refused):
        app.publish_raw("image.tagged", '{"tags": ["x", 3]}')
    with pytest.raises(PayloadError, match=r"\$: 'tags' is a required property"):
        app.publish_raw("image.tagged", {})
    with pytest.raises(PayloadError, match=r"\$: Additional properties are not allowed"):
        app.publish_raw("image.tagged", {"tags": [], "colour": "red"})
    assert task_count(app) == 0
    tid = app.publish_raw("image.tagged", {"tags": ["x"]})
    assert admin.get_task(app, tid)["input"] == '{"tags": ["x"]}'


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ('{"tags": ["a\\u0000b"], "note": 1}', r"\$\.note: 1 is not of type 'string'"),
        ('{"tags": ["\\ud800", 7]}', r"\$\.tags\[1\]: 7 is not of type 'string'"),
        ({"tags": ["x"], "note": ["y" * 1_000_000]}, r"\$\.note: \['yyyy"),
        ({"tags": list(range(200_000))}, r"\$\.tags\[0\]: 0 is not of type 'string'$"),
        ("[" * 100_000 + "]" * 100_000, "nests too deep"),
        ('{"tags": NaN}', "not valid JSON"),
        ('{"tags": ["x"]', "not valid JSON"),
    ],
)
def test_hostile_inputs_get_clear_errors_and_no_row(app: Tasker, payload: Any, needle: str) -> None:
    declare(app, Tagged)
    with pytest.raises(PayloadError, match=needle) as err:
        app.publish_raw("image.tagged", payload)
    assert len(str(err.value)) < 500  # a huge value is not repeated whole
    assert task_count(app) == 0


def test_hostile_text_that_fits_the_schema_is_kept(app: Tasker) -> None:
    declare(app, Tagged)
    tid = app.publish_raw("image.tagged", {"tags": ["a\x00b", "\ud800", "z" * 100_000]})
    assert json.loads(admin.get_task(app, tid)["input"])["tags"][:2] == ["a\x00b", "\ud800"]


def test_a_topic_without_a_declared_schema_is_accepted_as_before(app: Tasker) -> None:
    tid = app.publish_raw("free.form", {"anything": [1, "two", None]})
    row = admin.get_task(app, tid)
    assert (row["timeout"], row["retry"], row["priority"]) == (5000, 3, 0)
    with app.transaction() as conn:  # a row made by a pause has no schema either
        store.topic_set_paused(conn, name="free.paused", paused=True)
    app.publish_raw("free.paused", {"x": 1})
    assert task_count(app) == 2


def test_publish_raw_takes_the_declared_settings_unless_given(app: Tasker) -> None:
    declare(app, MathAdd)
    row = admin.get_task(app, app.publish_raw("math.add", {"value": 1}))
    assert (row["timeout"], row["retry"], row["priority"]) == (7500, 2, 3)
    row = admin.get_task(app, app.publish_raw("math.add", {"value": 1}, retry=9, priority=0))
    assert (row["timeout"], row["retry"], row["priority"]) == (7500, 9, 0)


def test_a_broken_declared_schema_checks_nothing(app: Tasker, caplog: Any) -> None:
    with app.transaction() as conn:
        store.topic_declare_many(
            conn, rows=[{"name": "bad.schema", "settings": "{", "payload_schema": '{"type": 7}'}]
        )
    app.publish_raw("bad.schema", {"x": 1})
    app.publish_raw("bad.schema", {"x": 2})
    warned = [r for r in caplog.records if "not valid JSON Schema" in r.getMessage()]
    assert len(warned) == 1  # compiled (and refused) once per schema text
    assert task_count(app) == 2


def test_cli_publish_refuses_a_bad_payload_with_its_path(
    app: Tasker, db_url: str, local_broker: str, tmp_path: Path
) -> None:
    declare(app, Tagged)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_DATABASE_URL=db_url, TASKER_BROKER_URL=local_broker)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tasker.cli", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60)  # fmt: skip

    p = cli("publish", "image.tagged", '{"tags": ["x", 3]}')
    assert p.returncode == 1
    assert p.stderr.strip() == "tasker: image.tagged: $.tags[1]: 3 is not of type 'string'"
    assert "Traceback" not in p.stderr
    assert task_count(app) == 0
    p = cli("publish", "image.tagged", '{"tags": ["x", "3"]}')
    assert p.returncode == 0, p.stderr
    assert task_count(app) == 1
