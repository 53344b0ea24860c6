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
        ("a\tb", "control character U+0009"),
        ("a\x1b[31mb", "control character U+001B"),
        ("a\x7fb", "U+007F"),
        ("a\x9bb", "U+009B"),  # a C1 control (CSI)
        ("admin\u202egnp.exe", "bidi control character U+202E"),
        ("a\u202ab", "U+202A"),
        ("a\u202cb", "U+202C"),
        ("a\u2066b", "U+2066"),
        ("a\u2069b", "U+2069"),
        (5, "must be text, not int"),
        (None, "must be text, not NoneType"),
        (b"bytes", "must be text, not bytes"),
    ],
)
def test_topics_no_transport_can_carry_are_refused(topic: object, reason: str) -> None:
    problem = topics.topic_problem(topic)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "topic",
    ["\u05e9\u05dc\u05d5\u05dd", "caf\u00e9 \u2603", "\U0001f600.e\u0301", "a\u200fb", "a\u00a0b"],
)
def test_other_unicode_topics_are_allowed(topic: str) -> None:
    # Hebrew, symbols, emoji with a combining accent, a right-to-left mark, a no-break space
    assert topics.topic_problem(topic) is None
    assert topics.key_problem(topic) is None


def test_printable_escapes_what_names_may_not_hold() -> None:
    from tasker.text import printable

    assert printable("plain text, caf\u00e9 \U0001f600") == "plain text, caf\u00e9 \U0001f600"
    assert printable("a\x1b[31mb\u202ec\x00d\x9be") == "a\\x1b[31mb\\u202ec\\x00d\\x9be"
    assert printable("one\ntwo\tthree\r", keep="\n\t") == "one\ntwo\tthree\\x0d"
    assert printable("\ud800") == "\\ud800"
