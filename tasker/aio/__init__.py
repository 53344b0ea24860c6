"""The asyncio API of a `Tasker` app: `apublish`, `apublish_many`, `aresult`, `aclose`.

`Tasker` inherits it from `AsyncApi` (see `tasker.aio.api`); nothing here
is loaded into a purely synchronous program's database path.
"""
from __future__ import annotations

from tasker.aio.api import AsyncApi

__all__ = ["AsyncApi"]
