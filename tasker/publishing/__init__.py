"""Publishing beyond tasker's own connection: `adopt` runs the store's
publish statements in the caller's transaction (`publish(...,
connection=...)`, DESIGN 1), so a task commits with the data it is about,
or not at all (the transactional outbox)."""

from __future__ import annotations

from tasker.publishing.adopt import adopt

__all__ = ["adopt"]
