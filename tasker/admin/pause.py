"""Pause and resume a topic (DESIGN 7, "What users of the peers expect").

The master stops dispatching a paused topic: it claims none of its tasks,
so nothing new starts; running and already dispatched (prefetched) tasks
finish; publishing still works. The flag lives in the `topic` table, so it
survives a change of master; the master reads it at most once a second, at
once on PostgreSQL (the change sends a NOTIFY). `tasker.admin` re-exports
these functions; the CLI's `tasker pause` / `tasker resume` call them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasker import store, topics
from tasker.exceptions import ConfigurationError

if TYPE_CHECKING:
    from tasker.app import Tasker


def _topic_name(topic: Any) -> str:
    """`topic` when it can be a topic; the one rule is `topics.topic_problem`
    (a pause names a topic exactly as a publish does)."""
    problem = topics.topic_problem(topic)
    if problem is not None:
        raise ConfigurationError(f"topic {topic!r} {problem}"[:300])
    return str(topic)


def pause(app: Tasker, topic: str) -> None:
    """Stop dispatching `topic` (DESIGN 7): the master claims none of its tasks
    until `resume`; running and already dispatched tasks finish; publishing
    still works. Kept in the database, so it survives a change of master;
    the master sees it within a second (at once on PostgreSQL). Pausing a
    topic no instance serves yet is allowed; pausing twice is harmless."""
    with app.transaction() as conn:
        store.topic_set_paused(conn, name=_topic_name(topic), paused=True)


def resume(app: Tasker, topic: str) -> None:
    """Dispatch `topic` again (the undo of `pause`; harmless when not paused)."""
    with app.transaction() as conn:
        store.topic_set_paused(conn, name=_topic_name(topic), paused=False)


def paused_topics(app: Tasker) -> set[str]:
    """The names of the paused topics."""
    with app.transaction() as conn:
        return store.topic_paused(conn)
