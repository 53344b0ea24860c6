"""Checks of stored text (DESIGN 2, "Text is stored safely"), shared by the tiers:
any Unicode text is kept, a NUL or lone surrogate escaped, and an entry longer
than 64 KiB cut with a marker saying how much was cut."""

from __future__ import annotations

import re

KIB64 = 64 * 1024
CUT_SLACK = 1024  # room for the marker and the entry's header
HOSTILE = re.compile("[\x00\ud800-\udfff]")


_AMOUNT = re.compile(
    r"(\d[\d,_]*(?:\.\d+)?)\s*(kib|kb|k|mib|mb|m|bytes|byte|b|characters|chars|char)?\b", re.I
)
_UNIT = {"kib": 1024, "kb": 1000, "k": 1000, "mib": 1024**2, "mb": 1e6, "m": 1e6}


def cut_amounts(text: str) -> list[float]:
    """Every amount a marker could state ("49934464 characters", "47.6 MiB", "12,345 bytes")."""
    return [
        float(n.replace(",", "").replace("_", "")) * _UNIT.get((u or "").lower(), 1)
        for n, u in _AMOUNT.findall(text)
    ]


def assert_cut(text: str, least: float, most: float, what: str) -> None:
    """An entry longer than 64 KiB is cut to 64 KiB, with a marker saying how much."""
    assert len(text.encode("utf-8")) <= KIB64 + CUT_SLACK, (
        f"{what}: {len(text)} characters kept, not cut to 64 KiB"
    )
    amounts = cut_amounts(text.replace("\n", " "))
    assert any(least <= a <= most for a in amounts), (
        f"{what}: no marker saying how much was cut (expected {least:g}..{most:g}): "
        f"{text[:200]!r} ... {text[-300:]!r}"
    )


def assert_safe_text(text: str | None, what: str) -> None:
    """Stored text is valid UTF-8 (no lone surrogate) and holds no NUL."""
    if text is None:
        return
    assert "\x00" not in text, f"{what} holds a NUL"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AssertionError(f"{what} is not valid UTF-8: {exc}") from None


def is_ordinary(text: str) -> bool:
    """Text with no NUL and no lone surrogate: it must be stored unchanged."""
    return HOSTILE.search(text) is None


def assert_keeps(stored: str, text: str, what: str) -> None:
    """`stored` holds `text`: verbatim when it is ordinary, else every ordinary
    run of it in order (whatever the escapes of NUL and surrogates look like)."""
    if is_ordinary(text):
        assert text in stored, f"{what}: {text!r} not kept in {stored[:300]!r}"
        return
    at = 0
    for run in HOSTILE.split(text):
        found = stored.find(run, at)
        assert found >= 0, f"{what}: {run!r} of {text!r} not kept in {stored[:300]!r}"
        at = found + len(run)
