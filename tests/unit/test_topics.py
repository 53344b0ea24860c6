"""Topic rules and queue names (tasker.topics)."""

from __future__ import annotations

import pytest

from tasker import topics


@pytest.mark.parametrize(
    ("topic", "queue"),
    [
        ("image.resize", "tasker.image.resize"),  # the queues of existing topics stay
        ("a_b-c~d", "tasker.a_b-c~d"),
        ("a/b", "tasker.a%2Fb"),
        ("a%2Fb", "tasker.a%252Fb"),  # the escape character is escaped
        ("a b:c", "tasker.a%20b%3Ac"),
        ("caf\u00e9", "tasker.caf%C3%A9"),
        ("..", "tasker..."),
    ],
)
def test_queue_names_are_ascii_and_readable(topic: str, queue: str) -> None:
    assert topics.topic_problem(topic) is None
    assert topics.queue_name(topic) == queue


def test_long_topics_get_short_distinct_names() -> None:
    emoji = ["\U0001f600" * 199 + c for c in "ab"]
    ascii_ = ["x" * 199 + c for c in "ab"]
    names = [topics.queue_name(t) for t in [*emoji, *ascii_, "x" * 150]]
    assert len(set(names)) == len(names)
    for name in names:
        assert name.isascii() and len(name) <= topics.MAX_QUEUE_CHARS
        assert "/" not in name and "\x00" not in name
    assert names[0].startswith("tasker.%F0%9F%98%80") and "%%" in names[0]
    assert names[-1] == "tasker." + "x" * 150  # short enough: no digest


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("x" * 201, "201 characters long; at most 200"),
        ("a\x00b", "U+0000"),
        ("a\nb", "U+000A"),
        ("a\ud800", "U+D800"),
        (5, "must be text, not int"),
        (None, "must be text, not NoneType"),
        (b"bytes", "must be text, not bytes"),
    ],
)
def test_topics_no_transport_can_carry_are_refused(topic: object, reason: str) -> None:
    problem = topics.topic_problem(topic)
    assert problem is not None and reason in problem
