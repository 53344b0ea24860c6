"""What a topic may be, and the broker queue that carries it.

DESIGN section 7: a topic is any non-empty text up to 200 characters that
every transport can carry. Rather than refuse what one transport cannot name
(`/` in a file name, more than 255 bytes of UTF-8 in an AMQP queue name), the
queue name encodes the topic into ASCII that all of them carry.
"""

from __future__ import annotations

import hashlib
import unicodedata
import urllib.parse

QUEUE_PREFIX = "tasker."
MAX_TOPIC_CHARS = 200
MAX_QUEUE_CHARS = 180
"""Longest queue name, in ASCII characters. The folder broker's file names
(`<time>_<uuid>.<queue>.msg`, renamed to `<pid>-<name>` when taken) must fit
the 255-byte name limit of common file systems; AMQP allows 255 bytes."""


def topic_problem(topic: object) -> str | None:
    """Why `topic` cannot be a topic, or None (DESIGN section 7: non-empty text of at
    most 200 characters that every transport carries). Control characters (NUL,
    newline) and lone surrogates are refused: neither the database's text nor a
    command line carries them. Everything else is carried by `queue_name`."""
    if not isinstance(topic, str):
        return f"must be text, not {type(topic).__name__}"
    if not topic.strip():
        return "must be non-empty text"
    if len(topic) > MAX_TOPIC_CHARS:
        return f"is {len(topic)} characters long; at most {MAX_TOPIC_CHARS} characters"
    for ch in topic:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return f"contains the control character or surrogate U+{ord(ch):04X}"
    return None


def queue_name(topic: str) -> str:
    """The queue of a topic: `tasker.` and the topic percent-encoded (RFC 3986
    unreserved characters, `A-Z a-z 0-9 - . _ ~`, stay as they are).

    The name is ASCII, so AMQP, Redis and file names all carry it, and
    distinct topics get distinct names: `a/b` becomes `tasker.a%2Fb`. A name
    longer than MAX_QUEUE_CHARS keeps its start and ends with `%%` and 32 hex
    digits of the topic's SHA-256 (`%%` never occurs in percent-encoding).
    """
    name = QUEUE_PREFIX + urllib.parse.quote(topic, safe="")
    if len(name) <= MAX_QUEUE_CHARS:
        return name
    digest = hashlib.sha256(topic.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return name[: MAX_QUEUE_CHARS - 34] + "%%" + digest


RESULT_QUEUE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def result_queue_problem(name: object) -> str | None:
    """Why `name` cannot be a `result_topic`, or None (None itself is fine).

    A result topic is the queue of exactly that name, which consumers in any
    language read by name, so it cannot be encoded as `queue_name` encodes a
    topic: it must already be what every transport carries, RFC 3986
    unreserved ASCII (`A-Z a-z 0-9 - . _ ~`) of at most MAX_QUEUE_CHARS,
    not starting with `amq.` (reserved by AMQP 0-9-1 brokers).
    """
    if name is None:
        return None
    if not isinstance(name, str):
        return f"must be text or None, not {type(name).__name__}"
    if not name:
        return "must be non-empty text"
    if len(name) > MAX_QUEUE_CHARS:
        return f"is {len(name)} characters long; at most {MAX_QUEUE_CHARS}"
    odd = sorted(set(name) - RESULT_QUEUE_CHARS)
    if odd:
        return (
            f"holds {', '.join(repr(c) for c in odd[:5])}: a queue name every broker "
            "carries is made of A-Z a-z 0-9 - . _ ~"
        )
    if name.startswith("amq."):
        return "may not start with 'amq.' (reserved by AMQP brokers)"
    return None
