"""Publishing: the `publish` family of a `Tasker` app (`PublishApi`, mixed
into `Tasker`), and `adopt`, which runs the store's publish statements in
the caller's transaction (`publish(..., connection=...)`, DESIGN 1), so a
task commits with the data it is about, or not at all (the transactional
outbox)."""

from __future__ import annotations

from tasker.publishing.adopt import adopt
from tasker.publishing.api import PublishApi

__all__ = ["PublishApi", "adopt"]
