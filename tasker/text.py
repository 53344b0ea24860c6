"""Text a task produces, made storable on every database (pure).

A task may log or raise anything Python can hold: a file name decoded with
`surrogateescape` (lone surrogates, which UTF-8 cannot encode), a NUL
(which PostgreSQL's `text` refuses), or 50 MB of it. Everything that
reaches the `log`, `errlog`, `result` or `input` column passes through
`storable` at the store boundary, so no task can make a status write fail.

Escapes are visible, not lossy in silence: NUL becomes the four characters
`\\x00`, a lone surrogate U+DCE9 the six characters `\\udce9` (Python's own
escape notation); ordinary text, any script or emoji, is kept as it is.
"""

from __future__ import annotations

import re

from tasker.topics import BIDI_CONTROLS

ENTRY_MAX_BYTES = 64 * 1024
"""An entry (one `ctx.log` message, one errlog entry, a result or an input)
longer than this in UTF-8 is cut, with a marker saying how much was cut."""

LOG_MAX_BYTES = 1024 * 1024
"""The log one attempt adds to its task, at most (each message is an entry
of at most `ENTRY_MAX_BYTES`): a task logging in a loop cannot fill the
database or the instance's memory."""

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return "\\x00" if ch == "\x00" else f"\\u{ord(ch):04x}"


def escape(text: str) -> str:
    """`text` with NUL and lone surrogates escaped; unchanged when it has none."""
    if text.isascii():
        return text.replace("\x00", "\\x00") if "\x00" in text else text
    return _UNSTORABLE.sub(_escape, text)


def cut(text: str, max_bytes: int = ENTRY_MAX_BYTES) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (plus a short marker saying
    how many bytes were cut), on a character boundary. Needs storable text."""
    if len(text) * 4 <= max_bytes:  # cheap: no character takes more than 4 bytes
        return text
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    head = data[:max_bytes].decode("utf-8", errors="ignore")
    return f"{head}\n... [cut {len(data) - len(head.encode('utf-8'))} bytes]"


def storable(text: str | None, max_bytes: int = ENTRY_MAX_BYTES) -> str | None:
    """Escape, then cut: what every text column receives."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    return cut(escape(text), max_bytes)


_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff" + "".join(sorted(BIDI_CONTROLS)) + "]"
)
"""What `topics.forbidden_char` refuses in names: control characters (Cc),
lone surrogates and the bidi controls."""


def _shown(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n <= 0xFF else f"\\u{n:04x}"


def printable(text: str, keep: str = "") -> str:
    """`text` as the CLI and the dashboard show what users and tasks wrote:
    every control character, lone surrogate and bidi control except those
    in `keep` (e.g. newline and tab in a log) becomes its Python escape
    (ESC is the four characters `\\x1b`, U+202E the six `\\u202e`), so a
    value can neither drive a terminal nor reorder what is shown after it.
    Ordinary text, any script or emoji, is kept as it is."""
    if text.isascii() and text.isprintable():
        return text
    return _UNPRINTABLE.sub(lambda m: m[0] if m[0] in keep else _shown(m[0]), text)


def describe(exc: BaseException) -> str:
    """`Type: message` of an exception, even when its `__str__` raises or
    returns something that is not text (a hostile task must not break its
    own failure report)."""
    name = _type_name(exc)
    try:
        message = str(exc)
    except BaseException:  # the task's object may raise anything
        try:
            message = repr(exc)
        except BaseException:  # the task's object may raise anything
            message = f"<unprintable {name}>"
    if not isinstance(message, str):
        message = f"<unprintable {name}>"
    return f"{name}: {message}" if message else name


def _type_name(exc: BaseException) -> str:
    try:
        return str(type(exc).__qualname__)
    except BaseException:  # the task's object may raise anything
        return "BaseException"
