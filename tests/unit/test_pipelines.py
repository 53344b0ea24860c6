"""Pure parts of chains, groups and result topics: what `chain()` and
`group()` accept, the result_topic check, when a wait is settled."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasker import Context, MsgQ, pipelines, results
from tasker.exceptions import ConfigurationError, PayloadError
from tasker.msgq import Registry
from tasker.topics import result_queue_problem
from tests.fixtures.pipelines import Add, Bill, Report


def test_later_steps_keep_their_class_settings() -> None:
    reg = Registry()
    reg.register(Add)
    first, rest = pipelines.chain_steps(reg, [Add(n=1), "p.add", Bill])
    assert isinstance(first, Add)
    assert rest == [
        {"topic": "p.add", "timeout_s": 5.0, "retry": 3, "result_topic": None, "priority": 0},
        {
            "topic": "p.bill",
            "timeout_s": 5.0,
            "retry": 1,
            "result_topic": "t.billing.results",
            "priority": 0,
        },
    ]
    assert "p.bill" in reg  # a class given as a step is registered like a publish does


def test_a_named_step_takes_declared_settings_else_the_defaults() -> None:
    declared = {"w.add": pipelines.declaration(Bill)["settings"]}
    _, rest = pipelines.chain_steps(Registry(), [Add(n=1), "w.add", "w.none"], declared)
    assert rest == [
        {"topic": "w.add", "timeout_s": 5.0, "retry": 1, "result_topic": "t.billing.results",
         "priority": 0},
        {"topic": "w.none", "timeout_s": 5.0, "retry": 3, "result_topic": None, "priority": 0},
    ]  # fmt: skip
    assert pipelines.named_topics(Registry(), [Add(n=1), "w.add", Add]) == ["w.add"]


@pytest.mark.parametrize(
    "text",
    ['{"timeout_s": -1, "retry": 0, "priority": 1.5, "result_topic": "amq.x"}', "[]", "{", "7"],
)
def test_unusable_declared_settings_fall_back_to_the_defaults(text: str) -> None:
    assert pipelines.declared_settings("w.x", text) == dict(pipelines.DEFAULT_SETTINGS)


def test_a_declaration_is_the_class_settings_and_payload_schema() -> None:
    import json

    d = pipelines.declaration(Add)
    assert d["name"] == "p.add"
    assert json.loads(d["settings"] or "") == {
        "timeout_s": 5.0, "retry": 3, "result_topic": None, "priority": 0
    }  # fmt: skip
    schema = json.loads(d["payload_schema"] or "")
    assert schema["$defs"]["AddPayload"]["required"] == ["n"]
    assert pipelines.declaration(Add) == d  # stable text: a restart writes nothing


@pytest.mark.parametrize(
    ("steps", "error", "needle"),
    [
        ([], PayloadError, "non-empty list"),
        ("p.add", PayloadError, "non-empty list"),
        ([Add], PayloadError, "step 1 must be a MsgQ instance"),
        ([Add(n=1), ""], ConfigurationError, "step 2: topic '' "),
        ([Add(n=1), Add(n=2)], PayloadError, "step 2: give its topic or MsgQ class"),
        ([Add(n=1), 3], PayloadError, "step 2 must be a topic or a MsgQ class, not int"),
        ([Add(n=1), None], PayloadError, "not NoneType"),
    ],
)
def test_chain_refuses_malformed_steps(steps: object, error: type[Exception], needle: str) -> None:
    reg = Registry()
    reg.register(Add)
    with pytest.raises(error, match=needle):
        pipelines.chain_steps(reg, steps)  # type: ignore[arg-type]


def test_the_callback_input_leaves_results_to_the_group() -> None:
    assert pipelines.callback_input(Report(label="é\u0000", results=[{"x": 1}])) == (
        '{"label":"\\u00e9\\u0000"}'
    )
    with pytest.raises(ConfigurationError, match="needs a field `results"):
        pipelines.callback_input(Add(n=1))
    with pytest.raises(PayloadError):
        pipelines.callback_input(Report)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (None, None),
        ("billing.results", None),
        ("A-z_0.9~", None),
        ("x" * 180, None),
        ("", "non-empty"),
        (3, "not int"),
        ("x" * 181, "at most 180"),
        ("résultats", "'é'"),
        ("a b", "' '"),
        ("a/b", "'/'"),
        ("a\x00b", "'\\x00'"),
        ("\ud800", "'\\ud800'"),
        ("amq.results", "reserved"),
    ],
)
def test_result_topic_names(name: object, problem: str | None) -> None:
    found = result_queue_problem(name)
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_a_class_with_a_bad_result_topic_is_refused_when_defined() -> None:
    with pytest.raises(ConfigurationError, match=r"result_topic 'amq\.gen'"):

        class Bad(MsgQ):
            topic = "u.bad"
            result_topic = "amq.gen"

            def exec(self, ctx: Context, worker_id: int) -> object:
                return None


def test_a_wait_is_settled_by_failure_or_by_the_last_success() -> None:
    def row(status: str, chain_next: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(status=status, chain_next=chain_next)

    assert results.settled(row("failed", '[{"topic": "b"}]'))
    assert results.settled(row("success"))
    assert not results.settled(row("success", '[{"topic": "b"}]'))
    assert not any(results.settled(row(s)) for s in ("pending", "running", "retry"))


class Keyed(MsgQ):
    topic = "p.keyed"
    expires = 30
    lock = "acct:{account}/{region}"
    account: str
    region: str = "eu"
    n: int = 0

    def exec(self, ctx: Context, worker_id: int) -> object:
        return None


def test_a_step_keeps_expires_lock_and_the_lock_field_defaults_of_its_class() -> None:
    _, rest = pipelines.chain_steps(Registry(), [Add(n=1), Keyed])
    assert rest == [{
        "topic": "p.keyed", "timeout_s": 5.0, "retry": 3, "result_topic": None, "priority": 0,
        "expires": 30.0, "lock": "acct:{account}/{region}", "lock_defaults": {"region": "eu"},
    }]  # fmt: skip
    declared = {"w.keyed": pipelines.declaration(Keyed)["settings"]}
    _, named = pipelines.chain_steps(Registry(), [Add(n=1), "w.keyed"], declared)
    assert named == [{**rest[0], "topic": "w.keyed"}]  # a distributor by name gets the same


@pytest.mark.parametrize(
    "extra",
    ['"expires": 0', '"expires": "1h"', '"lock": "a:{}"', '"lock": 5', '"lock_defaults": [1]',
     '"lock_defaults": {"a": {"b": 1}}'],
)  # fmt: skip
def test_unusable_declared_expires_or_lock_are_left_out(extra: str) -> None:
    text = '{"timeout_s": 2, "retry": 1, "result_topic": null, "priority": 0, ' + extra + "}"
    assert pipelines.declared_settings("w.x", text) == {
        "timeout_s": 2, "retry": 1, "result_topic": None, "priority": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("result", "key"),
    [
        ('{"account": "a1", "region": "us"}', "acct:a1/us"),
        ('{"account": "a1"}', "acct:a1/eu"),  # the class's default
        ('{"region": "us"}', None),  # a required field missing: the step fails as bad input
        ("[1, 2]", None),
        ("not json", None),
        ('{"account": "a\\u001b[2J"}', "sha256:"),  # no key holds ESC: a hash still serialises
        ('{"account": "' + "x" * 300 + '"}', "sha256:"),
    ],
)
def test_a_later_step_lock_key_is_formatted_from_its_input(result: str, key: str | None) -> None:
    from tasker.store.links import _step_lock

    head = pipelines.step_spec(Keyed)
    got = _step_lock(1, head, result)
    if key == "sha256:":
        assert got is not None and got.startswith("sha256:") and len(got) == 71
        assert _step_lock(2, head, result) == got  # the same input, the same key
    else:
        assert got == key
    bad_format = {**head, "lock": "acct:{account:d}"}  # a str does not format as :d
    assert _step_lock(1, bad_format, '{"account": "a"}') == "acct:{account:d}"
