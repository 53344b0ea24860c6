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

from tasker import store
from tasker.exceptions import ConfigurationError

if TYPE_CHECKING:
    from tasker.app import Tasker


def _topic_name(topic: Any) -> str:
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigurationError(f"a topic is non-empty text, not {topic!r}")
    if len(topic) > 200 or "\x00" in topic:
        raise ConfigurationError("a topic is at most 200 characters, without NUL")
    try:
        topic.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError("a topic must be valid Unicode (a lone surrogate)") from None
    return topic


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
