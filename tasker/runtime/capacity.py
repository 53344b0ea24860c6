"""How much the master may send a topic, and how claims become messages (pure; DESIGN 5).

The live instances' rows say what each can hold of a topic (`concurrency`
slots plus its advertised prefetch); the master never has more in flight.
Claimed tasks go out one per message while there are fewer than free slots
(latency); when a backlog builds they are packed up to what one consumer
can start soon (its `concurrency` plus its prefetch, the smallest of the
live consumers'), spread over the consumers, never more than
`defaults.MAX_TASKS_PER_MESSAGE` (throughput: the broker's cost is per
message, PERFORMANCE.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasker import defaults, store

Pair = tuple[int, int]
"""A claimed task: (id, dispatch token)."""


@dataclass(frozen=True)
class Capacity:
    """What the live consumers of one topic can hold."""

    slots: int  # sum of concurrency
    limit: int  # slots plus prefetch
    concurrency: int  # the largest per-instance concurrency
    soon: int = 0  # the fewest tasks one consumer can start soon (concurrency + prefetch)
    consumers: int = 0  # live instances serving the topic


def capacity_of(topic: str, instances: Sequence[Any]) -> Capacity:
    """What the live instances' rows say they can hold of `topic`."""
    slots = limit = conc = consumers = 0
    soon: int | None = None
    for row in instances:
        cfg = store.topics_of(row).get(topic)
        if not cfg:
            continue
        c = int(cfg.get("concurrency", 1))
        held = c + int(cfg.get("prefetch", c))
        slots += c
        limit += held
        conc = max(conc, c)
        soon = held if soon is None else min(soon, held)
        consumers += 1
    return Capacity(slots, limit, conc, soon or 0, consumers)


def pack(
    pairs: Sequence[Pair], *, slots: int, concurrency: int, backlog: bool,
    soon: int = 0, consumers: int = 1,
) -> list[list[Pair]]:  # fmt: skip
    """Split claimed tasks into messages.

    Idle: one task per message while there are no more tasks than execution
    slots (latency). Backlog: the claim spread over the `consumers`, at
    least `concurrency` and at most `soon` (what one consumer can start
    soon) per message, so the broker costs a message per tens of tasks.
    """
    if not pairs:
        return []
    most = defaults.MAX_TASKS_PER_MESSAGE
    cap = max(1, min(concurrency, most))
    if backlog:
        spread = math.ceil(len(pairs) / max(1, consumers))
        size = max(cap, min(spread, soon, most))
    elif len(pairs) <= max(1, slots):
        size = 1
    else:
        size = min(cap, math.ceil(len(pairs) / max(1, slots)))
    return [list(pairs[i : i + size]) for i in range(0, len(pairs), size)]


# --- priorities under prefetch (DESIGN 7) ---------------------------------------
# `ahead` is the lowest priority among this term's claims of a topic that may
# still wait on a consumer, None while unknown (a new term). A topic whose
# tasks share one priority keeps it equal to every claim's: no probe beyond
# today's, no take-back.


def must_probe_priorities(ahead: int | None, batch: int, claimed_low: int | None) -> bool:
    """Whether a sweep that claimed a full `batch` (0: none allowed) must look
    for due tasks above `ahead`: always when it claimed nothing (the any-due
    probe it needs anyway carries the question), else only when this batch's
    lowest priority `claimed_low` is above `ahead` (then due tasks may be too)."""
    if batch == 0 or ahead is None:
        return True
    return claimed_low is not None and claimed_low > ahead


def lowest_ahead(ahead: int | None, claimed_low: int | None, top: int | None) -> int | None:
    """`ahead` after a sweep that claimed down to `claimed_low` (None:
    nothing) and took back every claim below `top` (None: none taken back):
    then nothing of ours below `top` waits, and this sweep's claims are at
    least `top` (claims go highest first)."""
    if top is not None and (ahead is None or top > ahead):
        return top
    if ahead is None or claimed_low is None:
        return ahead
    return min(ahead, claimed_low)
