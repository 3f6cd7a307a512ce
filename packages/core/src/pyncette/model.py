"""Public data types: modes, task state as returned to users, and the per-run :class:`Context`.

Nothing here depends on the runtime: :class:`AppContext` describes, as a protocol, what a task body
may use of the running app (:class:`pyncette.PyncetteContext` provides it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .clock import Clock
from .errors import ConfigurationError
from .modes import ExecutionMode, FailureMode
from .task import Instance, Task


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


class AppContext(Protocol):
    """What a task body may use of the running app (``context.app_context``)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def shutting_down(self) -> bool: ...

    def shutdown(self) -> None: ...

    def add_to_context(self, name: str, value: Any) -> None: ...

    async def schedule_task(
        self, task: Task, instance_name: str, *, force: bool = False, **options: Any
    ) -> Instance: ...

    async def schedule_tasks(
        self, task: Task, instances: Mapping[str, Mapping[str, Any]], *, force: bool = False
    ) -> list[Instance]: ...

    async def unschedule_task(self, task: Task, instance_name: str | None = None) -> None: ...

    async def get_task(self, task: Task, instance_name: str | None = None) -> TaskState | None: ...

    async def list_tasks(
        self, task: Task, limit: int | None = None, continuation_token: str | None = None
    ) -> ListTasksResponse: ...


class Context:
    """What a task body receives: the run's details, fixtures and injected values as attributes.

    Attributes:
        app_context: the running :class:`~pyncette.PyncetteContext`.
        task: the task (a concrete :class:`~pyncette.task.Instance` for dynamic tasks).
        scheduled_at: the scheduled time of this run, in the task's time zone.
        args: the task's extra keyword arguments.
    """

    app_context: AppContext
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


#: Names a task context already uses; fixtures and injected values may not take them.
RESERVED_CONTEXT_NAMES = frozenset({"app_context", "task", "scheduled_at", "args", "heartbeat"})


def validate_context_names(names: Iterable[str]) -> None:
    """Refuse fixture or context names that clash with the context's own attributes."""
    for name in names:
        if name in RESERVED_CONTEXT_NAMES or name.startswith("_"):
            raise ConfigurationError(f"context name {name!r} is reserved")


TaskFunc = Callable[[Context], Awaitable[None]]
#: Called after every pass of the scheduler loop with the app context and the pass's duration in seconds.
TickListener = Callable[[AppContext, float], None]


class NextFunc(Protocol):
    """The continuation a middleware calls."""

    def __call__(self) -> Awaitable[None]: ...


MiddlewareFunc = Callable[[Context, NextFunc], Awaitable[None]]


__all__ = [
    "AppContext",
    "Context",
    "ExecutionMode",
    "FailureMode",
    "ListTasksResponse",
    "MiddlewareFunc",
    "NextFunc",
    "TaskFunc",
    "TaskState",
    "TickListener",
    "validate_context_names",
]
