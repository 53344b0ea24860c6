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


BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""The bidi embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069):
they reorder how the text after them is shown, so a name holding one can read
as another on a terminal or a page (Trojan Source, CVE-2021-42574)."""


def forbidden_char(text: str) -> str | None:
    """The first character of `text` that no topic or key may hold, or None:
    a control character (Unicode category Cc: NUL, newline, tab, ESC, DEL, the
    C1 controls), a lone surrogate (no UTF-8 encodes it) or one of
    BIDI_CONTROLS. Everything else, any script, emoji or combining mark, is
    allowed. The one rule of tasker's names and keys."""
    if text.isascii():
        return next((ch for ch in text if ch < " " or ch == "\x7f"), None)
    for ch in text:
        if ch in BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs"):
            return ch
    return None


def describe_char(ch: str) -> str:
    """`ch` as an error message names it: `the control character U+001B`."""
    if ch in BIDI_CONTROLS:
        return f"the bidi control character U+{ord(ch):04X} (it reorders how text is shown)"
    if unicodedata.category(ch) == "Cs":
        return f"the lone surrogate U+{ord(ch):04X}"
    return f"the control character U+{ord(ch):04X}" + (" (NUL)" if ch == "\x00" else "")


def topic_problem(topic: object) -> str | None:
    """Why `topic` cannot be a topic, or None (DESIGN section 7: non-empty text of at
    most 200 characters that every transport carries). What `forbidden_char`
    finds is refused: neither the database's text nor a command line carries
    a control character or a lone surrogate, and a bidi control would make
    one topic read as another. Everything else is carried by `queue_name`."""
    if not isinstance(topic, str):
        return f"must be text, not {type(topic).__name__}"
    if not topic.strip():
        return "must be non-empty text"
    if len(topic) > MAX_TOPIC_CHARS:
        return f"is {len(topic)} characters long; at most {MAX_TOPIC_CHARS} characters"
    ch = forbidden_char(topic)
    if ch is not None:
        return f"contains {describe_char(ch)}"
    return None


MAX_KEY_CHARS = 255
"""The width of the `unique_key` and `lock_key` columns."""


def key_problem(key: object) -> str | None:
    """Why `key` cannot be a unique key or a lock key, or None: non-empty text
    of at most 255 characters without what `forbidden_char` finds (a key is
    matched as it is, never escaped, and shown by the CLI and the dashboard)."""
    if not isinstance(key, str):
        return f"must be text, not {type(key).__name__}"
    if not key:
        return "must not be empty"
    if len(key) > MAX_KEY_CHARS:
        return f"is {len(key)} characters long; at most {MAX_KEY_CHARS}"
    ch = forbidden_char(key)
    if ch is not None:
        return f"must not contain {describe_char(ch)}"
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
