"""Public data types: modes, task state as returned to users, and the per-run :class:`Context`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .runtime import PyncetteContext
    from .task import Task


class ExecutionMode(Enum):
    """How a run is guarded against running twice or not at all."""

    #: Lease the run, commit after success: a crash means a retry (default).
    AT_LEAST_ONCE = 0
    #: Schedule the next run before the body starts; failures are only logged.
    AT_MOST_ONCE = 1


class FailureMode(Enum):
    """What an AT_LEAST_ONCE run that raised does with its lease."""

    #: Keep the lease until it expires, then retry (default).
    NONE = 0
    #: Release the lease at once: retried on the next tick.
    UNLOCK = 1
    #: Treat the failure as success and schedule the next run.
    COMMIT = 2


@dataclass(frozen=True)
class TaskState:
    """A task's stored state, as returned by :meth:`PyncetteContext.get_task`."""

    task: Task
    scheduled_at: datetime
    locked_until: datetime | None
    locked_by: str | None


@dataclass(frozen=True)
class ListTasksResponse:
    """One page of :meth:`PyncetteContext.list_tasks`; pass ``continuation_token`` back for the next."""

    tasks: list[TaskState]
    continuation_token: str | None


class Context:
    """What a task body receives: the run's details, fixtures and injected values as attributes.

    Attributes:
        app_context: the running :class:`~pyncette.PyncetteContext`.
        task: the task (a concrete instance for dynamic tasks).
        scheduled_at: the scheduled time of this run, in the task's time zone.
        args: the task's extra keyword arguments.
    """

    app_context: PyncetteContext
    task: Task
    scheduled_at: datetime
    args: dict[str, Any]

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    async def heartbeat(self) -> None:
        """Extend this run's lease; raises :class:`~pyncette.errors.LeaseLostException` if it was lost."""
        await self._heartbeat()

    async def _heartbeat(self) -> None:  # replaced per run by the runtime
        return None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"context has no attribute {name!r} (is a fixture or add_to_context missing?)")


TaskFunc = Callable[[Context], Awaitable[None]]


class NextFunc(Protocol):
    """The continuation a middleware calls."""

    def __call__(self) -> Awaitable[None]: ...


MiddlewareFunc = Callable[[Context, NextFunc], Awaitable[None]]


__all__ = [
    "Context",
    "ExecutionMode",
    "FailureMode",
    "ListTasksResponse",
    "MiddlewareFunc",
    "NextFunc",
    "TaskFunc",
    "TaskState",
]
