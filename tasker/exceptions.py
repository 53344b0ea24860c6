"""Every error tasker raises is a `TaskerError`; its docstring is its default message."""

from __future__ import annotations


class TaskerError(Exception):
    """A tasker error occurred."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(TaskerError):
    """The configuration is not valid."""


class DuplicateTopic(ConfigurationError):
    """Two MsgQ classes declare the same topic."""


class UnknownTopic(TaskerError):
    """No MsgQ class is registered for this topic."""


class PayloadError(TaskerError):
    """The task input does not decode into its MsgQ class."""


class InvalidTime(TaskerError, ValueError):
    """This is not a time or delay tasker can plan a task at."""


class DuplicateTask(TaskerError):
    """A live task (pending, retry or running) already holds this unique key."""

    def __init__(
        self,
        message: str | None = None,
        *,
        task_id: int | None = None,
        topic: str | None = None,
        unique_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id  # the live task's id (None for a duplicate within one batch)
        self.topic = topic
        self.unique_key = unique_key


class IllegalTransition(TaskerError):
    """This status change is not allowed by the state machine."""


class TaskNotFound(TaskerError):
    """No task has this id."""


class DatabaseError(TaskerError):
    """The database refused or could not be reached."""


class SchemaMissing(DatabaseError):
    """tasker's tables are missing from this database: run `tasker db upgrade`."""


class BrokerError(TaskerError):
    """The broker refused or could not be reached."""


class BrokerRefused(BrokerError):
    """The broker refused these settings for good (a wrong user or password,
    a virtual host that does not exist or that the user may not use):
    retrying the same URL cannot help, so it is not retried."""


class TaskTimeout(TaskerError):
    """The task did not reach a terminal state in time."""


class TaskCancelled(TaskerError):
    """An admin cancelled this task while it ran: stop and let the exception out."""


class LeadershipLost(TaskerError):
    """This instance is no longer master for the term it acted under."""


class Fail(TaskerError):
    """The task failed for good: `raise tasker.Fail("reason")` in `exec` ends it
    `failed` now, whatever runs are left (River's `JobCancel`, Celery's
    `Reject(requeue=False)`)."""
