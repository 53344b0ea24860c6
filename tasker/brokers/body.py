"""The message body, JSON on the wire: {"tasks": [[id, token], ...]}.

Never pickle: a consumer decodes only this shape, and anything else is refused
with a `ValueError` saying what is wrong (the message is dropped, no row moves).
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def encode_body(pairs: Sequence[tuple[int, int]]) -> bytes:
    return json.dumps({"tasks": [list(p) for p in pairs]}, separators=(",", ":")).encode()


def decode_body(body: bytes | str) -> list[tuple[int, int]]:
    """The (id, token) pairs of a message, or ValueError saying what is wrong."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"message is not valid JSON: {exc}") from None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list):
        raise ValueError('message has no "tasks" list')
    pairs = []
    for item in tasks:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            raise ValueError(f"message task {item!r} is not an [id, token] pair of ints")
        pairs.append((item[0], item[1]))
    return pairs
