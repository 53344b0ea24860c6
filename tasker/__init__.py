"""tasker: background tasks across processes and machines, your database as the source of truth."""

from __future__ import annotations

from tasker.app import Result, Tasker
from tasker.context import Context
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
from tasker.msgq import MsgQ
from tasker.states import Status

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
