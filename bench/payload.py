"""Payload decode and encode cost, the hand-written checker against msgspec, side by side.

    python -m bench.payload --n 200000

Prints `name: value unit` lines (µs per payload, best of --runs runs): for a
small payload (the README's Resize: a str and an int) and a wide one (ten
fields, a 20-element list[str], a dict[str, int]), `decode_*_old` /
`encode_*_old` run the checker tasker used before msgspec (`json` plus a walk
over the type hints, kept here and nowhere else), `decode_*_new` /
`encode_*_new` run `MsgQ.decode` / `MsgQ.encode` (msgspec; encode also checks
the field types). Nothing touches a database or a broker.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import types
import typing
from collections.abc import Callable
from typing import Any

from tasker import MsgQ
from tasker.exceptions import PayloadError


class Small(MsgQ):
    topic = "bench.small"
    path: str
    width: int = 640

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None


class Wide(MsgQ):
    topic = "bench.wide"
    user: str
    account: int
    amount: float
    currency: str
    note: str | None
    urgent: bool
    tags: list[str]
    counts: dict[str, int]
    retries: int = 3
    ratio: float = 1.0

    def exec(self, ctx, worker_id):  # type: ignore[no-untyped-def]
        return None


SAMPLES: list[MsgQ] = [
    Small(path="images/2026/11/30/cat.png", width=1280),
    Wide(
        user="ada@example.com",
        account=123456789,
        amount=1299.95,
        currency="EUR",
        note="second reminder",
        urgent=False,
        tags=[f"tag-{i}" for i in range(20)],
        counts={"a": 1, "b": 2, "c": 3},
    ),
]


# --- the checker tasker used before msgspec (bench only) ---------------------------


def old_encode(msg: MsgQ) -> str:
    return json.dumps(msg.payload(), separators=(",", ":"), allow_nan=False)


def old_decode(cls: type[MsgQ], text: str) -> MsgQ:
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{cls.topic}: input is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{cls.topic}: input must be a JSON object")
    fields, hints = _old_schema(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PayloadError(f"{cls.topic}: unknown field(s) {', '.join(unknown)}")
    for name, f in fields.items():
        if name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise PayloadError(f"{cls.topic}: missing field {name!r}")
        problem = _old_problem(data[name], hints.get(name, Any))
        if problem:
            raise PayloadError(f"{cls.topic}: field {name!r} {problem}")
    return cls(**data)


def _old_schema(cls: type[MsgQ]) -> tuple[dict[str, Any], dict[str, Any]]:
    cached = cls.__dict__.get("_bench_old_schema")
    if cached is None:
        cached = ({f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls))  # type: ignore[arg-type]
        cls._bench_old_schema = cached  # type: ignore[attr-defined]
    return cached


def _old_problem(value: Any, hint: Any) -> str | None:
    if hint is Any or hint is object:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if any(_old_problem(value, o) is None for o in typing.get_args(hint)):
            return None
        return "has the wrong type"
    if hint is type(None):
        return None if value is None else "must be null"
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint)
    if expected is not None:
        if isinstance(value, bool) and hint is not bool:
            return "got bool"
        return None if isinstance(value, expected) else "has the wrong type"
    base = origin or hint
    if base in (list, tuple, set, frozenset):
        return None if isinstance(value, list) else "must be a list"
    if base is dict:
        return None if isinstance(value, dict) else "must be an object"
    return None


# --- timing ---------------------------------------------------------------------------


def per_call_us(fn: Callable[[], object], n: int, runs: int) -> float:
    """Best of `runs` timings of `n` calls, in µs per call."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    for msg in SAMPLES:
        cls = type(msg)
        kind = cls.topic.split(".")[1]
        text = msg.encode()
        assert old_decode(cls, text) == cls.decode(text) == msg
        assert json.loads(old_encode(msg)) == json.loads(text)
        timings = [
            ("decode", "old", lambda cls=cls, text=text: old_decode(cls, text)),
            ("decode", "new", lambda cls=cls, text=text: cls.decode(text)),
            ("encode", "old", lambda msg=msg: old_encode(msg)),
            ("encode", "new", lambda msg=msg: msg.encode()),
        ]
        for op, which, fn in timings:
            us = per_call_us(fn, args.n, args.runs)
            print(f"payload.{op}_{kind}_{which}: {us:.2f} us", flush=True)


if __name__ == "__main__":
    main()
