"""The exception hierarchy. Every error Pyncette raises derives from :class:`PyncetteException`.

Backends translate their drivers' errors at the boundary (see
:func:`pyncette.abc.map_exceptions`), so callers never need to catch
``redis``, ``asyncpg`` or ``botocore`` exceptions.
"""

from __future__ import annotations


class PyncetteException(Exception):
    """Base class of every Pyncette error."""


class ConfigurationError(PyncetteException, ValueError):
    """A task, app or backend option was given a value that is not allowed."""


class LeaseLostException(PyncetteException):
    """The lease on a running task was lost: another worker may run it, so this one must not commit."""

    def __init__(self, task: object = None, message: str | None = None) -> None:
        self.task = task
        super().__init__(message or f"lease lost on task {task!r}")


class TaskLockedException(PyncetteException):
    """A dynamic task instance cannot be changed while it is running (pass ``force=True`` to override)."""

    def __init__(self, task: object = None, message: str | None = None) -> None:
        self.task = task
        super().__init__(message or f"task {task!r} is locked (running); use force=True to override")


class TaskTimeout(PyncetteException, TimeoutError):
    """A run's body ran longer than its task's ``timeout=`` and was cancelled (counts as a failure)."""


class BackendError(PyncetteException):
    """A storage call failed (connection lost, timeout, throttling, ...).

    The scheduler loop logs these and retries with backoff; they never stop ``run()``.
    """


class BackendNotFound(PyncetteException, LookupError):
    """No installed backend has the requested name."""


class RecordDecodeError(PyncetteException):
    """A stored task record could not be decoded (corrupt or written by an incompatible version)."""


class ForcedShutdown(PyncetteException):
    """The app was stopped by a second signal, cancelling running tasks (``app.main()`` exits with status 1)."""


def leaf_exception(exc: BaseException) -> BaseException:
    """The single exception inside (nested) exception groups, or ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and len(inner) == 1:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


__all__ = [
    "BackendError",
    "BackendNotFound",
    "ConfigurationError",
    "ForcedShutdown",
    "LeaseLostException",
    "PyncetteException",
    "RecordDecodeError",
    "TaskLockedException",
    "TaskTimeout",
    "leaf_exception",
]
