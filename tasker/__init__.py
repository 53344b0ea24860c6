"""tasker: background tasks across processes and machines, your database as the source of truth."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tasker.exceptions import (
    BrokerError,
    ConfigurationError,
    DatabaseError,
    DuplicateTask,
    DuplicateTopic,
    Fail,
    IllegalTransition,
    LeadershipLost,
    PayloadError,
    SchemaMissing,
    TaskCancelled,
    TaskerError,
    TaskNotFound,
    TaskTimeout,
    UnknownTopic,
)
from tasker.states import Status

if TYPE_CHECKING:
    from tasker.app import Result, Tasker
    from tasker.context import Context
    from tasker.msgq import MsgQ

_LAZY = {"Result": "tasker.app", "Tasker": "tasker.app", "Context": "tasker.context",
         "MsgQ": "tasker.msgq"}  # fmt: skip
"""Imported on first use, so that `tasker --help` or `tasker status` does
not pay for the whole library (kombu, the publishing path) at start-up."""


def __getattr__(name: str) -> Any:
    """`tasker.Tasker`, `tasker.MsgQ`, ... on first use; `tasker.admin` and the
    other subpackages too, as an eager import of the app used to provide."""
    module = _LAZY.get(name)
    if module is None:
        if name.startswith("_"):
            raise AttributeError(f"module 'tasker' has no attribute {name!r}")
        try:
            return importlib.import_module(f"tasker.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tasker.{name}":
                raise
            raise AttributeError(f"module 'tasker' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "Context",
    "DatabaseError",
    "DuplicateTask",
    "DuplicateTopic",
    "Fail",
    "IllegalTransition",
    "LeadershipLost",
    "MsgQ",
    "PayloadError",
    "Result",
    "SchemaMissing",
    "Status",
    "TaskCancelled",
    "TaskNotFound",
    "TaskTimeout",
    "Tasker",
    "TaskerError",
    "UnknownTopic",
]
