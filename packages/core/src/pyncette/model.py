"""Public data types: modes, task state as returned to users, and the per-run :class:`Context`.

Nothing here depends on the runtime: :class:`AppContext` describes, as a protocol, what a task body
may use of the running app (:class:`pyncette.PyncetteContext` provides it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Protocol, TypeVar

from . import runstate
from .abc import Lease, Record
from .clock import Clock
from .errors import ConfigurationError
from .modes import ExecutionMode, FailureMode
from .task import Instance, PartitionSelector, Task


@dataclass(frozen=True)
class TaskState:
    """A task's stored state, as returned by :meth:`PyncetteContext.get_task`.

    Attributes:
        task: the task (an instance for dynamic tasks).
        scheduled_at: when the next run is due as stored, in the task's time zone (a retry's delay and a
            jitter offset included).
        locked_until, locked_by: the lease, ``None`` when not leased.
        attempt: the number of the next try of the current scheduled run, from 1 (above 1 while retrying).
        last_outcome: how the last run ended (``succeeded``, ``failed``, ``timed_out``, ``skipped``,
            ``missed``), ``None`` before the first; ``last_started``, ``last_finished`` and ``last_error``
            describe it. An at-most-once run stores only its start (``last_started``, with the other
            fields ``None``): its outcome is known after the record was committed, and storing it would cost
            a second write (with ``overlap="skip"`` or ``"wait"`` that write is made, and the outcome stored).
    """

    task: Task
    scheduled_at: datetime
    locked_until: datetime | None
    locked_by: str | None
    attempt: int = 1
    last_outcome: str | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_error: str | None = None

    @classmethod
    def from_record(cls, task: Task, record: Record) -> TaskState:
        """The state ``record`` stores for ``task`` (a static task, or the instance the record decodes to)."""
        state = runstate.decode(record.state)
        return cls(
            task,
            record.scheduled_at.astimezone(task.tz),
            record.locked_until,
            record.locked_by,
            attempt=state.attempt,
            last_outcome=state.last_outcome,
            last_started=state.last_started,
            last_finished=state.last_finished,
            last_error=state.last_error,
        )


@dataclass(frozen=True)
class Pause:
    """A stored pause, as :meth:`PyncetteContext.describe_task` and :meth:`~PyncetteContext.list_pauses` report it.

    Attributes:
        task: the name of the static task or dynamic template it belongs to.
        scope: ``"task"`` (the static task or every instance of the template), ``"instance"`` (the one
            instance named by ``match``) or ``"prefix"`` (every instance whose name starts with ``match``).
        match: the instance name or prefix (``""`` for scope ``"task"``).
        note, by: what the operator gave when pausing (``None`` when nothing).
        at: when it was paused (UTC; ``None`` if the stored information could not be read).
    """

    task: str
    scope: str
    match: str
    note: str | None = None
    by: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class TaskDescription:
    """What :meth:`PyncetteContext.describe_task` returns: the stored state and what comes next.

    Attributes:
        state: the stored state (next run, lease holder and expiry, attempt, last run and error).
        next_runs: the next scheduled runs as the schedule gives them (daylight-saving time applied), in the
            task's time zone, starting with the stored next run (for a retry: the run being retried); without
            jitter offsets or retry delays. Fewer when the schedule ends (a once-off instance has one).
            While a run triggered by ``run_task_now`` waits, it comes first.
        paused: the pause holding the task (the widest, when several do), ``None`` when it runs.
    """

    state: TaskState
    next_runs: list[datetime]
    paused: Pause | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One run in a task's history (the ``history=`` option), as :meth:`PyncetteContext.task_history` returns it.

    Attributes:
        scheduled_at: the run's scheduled time (UTC); for a run triggered by ``run_task_now``, when it was
            triggered.
        started_at, finished_at: when its body started and ended (UTC).
        outcome: ``succeeded``, ``failed`` or ``timed_out``.
        attempt: which try of the scheduled run it was, from 1.
        process: the process that ran it (``host:pid``).
        error: ``Type: message`` of a failure, at most 500 characters, ``None`` otherwise.
    """

    scheduled_at: datetime
    started_at: datetime
    finished_at: datetime
    outcome: str
    attempt: int
    process: str
    error: str | None = None


@dataclass(frozen=True)
class Orphan:
    """Records in storage that no task of the app owns any more (see :meth:`PyncetteContext.prune`).

    Attributes:
        parent: the storage group (``<task>/static`` for a static task, ``<template>`` or
            ``<template>/<partition>`` for a dynamic template).
        records: how many records it holds (counted when listing).
        deleted: whether :meth:`~PyncetteContext.prune` deleted them (``False`` in a dry run).
    """

    parent: str
    records: int
    deleted: bool = False


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

    async def describe_task(
        self, task: Task, instance_name: str | None = None, *, next_runs: int = 5
    ) -> TaskDescription | None: ...

    async def list_tasks(
        self, task: Task, limit: int | None = None, continuation_token: str | None = None
    ) -> ListTasksResponse: ...


class RunHandle(Protocol):
    """What a context needs of the run it belongs to (the runtime's): a way to extend its lease."""

    async def heartbeat(self) -> None: ...


class Context:
    """What a task body receives: the run's details, fixtures and injected values as attributes.

    Attributes:
        app_context: the running :class:`~pyncette.PyncetteContext`.
        task: the task (a concrete :class:`~pyncette.task.Instance` for dynamic tasks).
        scheduled_at: the scheduled time of this run, in the task's time zone (as the schedule gives it:
            without a jitter offset or a retry delay).
        args: the task's extra keyword arguments.
        attempt: which try of this scheduled run this is, from 1 (see ``retry=``).
    """

    app_context: AppContext
    task: Task
    scheduled_at: datetime
    args: dict[str, Any]
    attempt: int

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    @classmethod
    def _of_run(
        cls,
        app_context: AppContext,
        task: Task,
        scheduled_at: datetime,
        attempt: int,
        run: RunHandle,
        origin: dict[str, str] | None,
        values: Mapping[str, Any],
    ) -> Context:
        """The runtime's constructor: the same context as ``__init__`` makes, without a keyword dictionary
        and an attribute dictionary per run (fewer objects for the garbage collector on the hot path)."""
        context = cls.__new__(cls)
        context.app_context = app_context
        context.task = task
        context.scheduled_at = scheduled_at
        context.args = task.extra_args
        context.attempt = attempt
        context._run = run
        context._origin = origin
        if values:
            context.__dict__.update(values)
        return context

    async def heartbeat(self) -> None:
        """Extend this run's lease; raises :class:`~pyncette.errors.LeaseLostException` if it was lost."""
        if self._run is not None:
            await self._run.heartbeat()

    #: The run this context belongs to (set by the runtime): what :meth:`heartbeat` extends.
    _run: RunHandle | None = None
    #: Trace propagation headers of the call that scheduled the instance (see :mod:`pyncette.otel`).
    _origin: dict[str, str] | None = None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"context has no attribute {name!r} (is a fixture or add_to_context missing?)")


#: Names a task context already uses; fixtures and injected values may not take them.
RESERVED_CONTEXT_NAMES = frozenset({"app_context", "task", "scheduled_at", "args", "heartbeat", "attempt"})


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

#: A fixture: an async generator taking the app context and yielding the value tasks see.
FixtureFunc = Callable[[Any], AsyncIterator[Any]]

# -- Pyncette 1.x names ---------------------------------------------------------------------------------
# Kept so that code written for 1.x, which annotates with them, keeps importing. ``PartitionSelector``
# (``(partition_count, instance_name) -> shard``) and ``Lease`` (one leased record) are the types the
# runtime uses; the poll types below describe 1.x's per-task polling, which Pyncette 2 replaced with
# batched claims: nothing in Pyncette 2 returns them.

T = TypeVar("T")
#: A decorator that returns what it decorates, typed.
Decorator = Callable[[T], T]
#: A page marker of :meth:`PyncetteContext.list_tasks` (opaque text in Pyncette 2).
ContinuationToken = str


class Heartbeater(Protocol):
    """``context.heartbeat``: extends the running task's lease."""

    def __call__(self) -> Awaitable[None]: ...


class ResultType(Enum):
    """Pyncette 1.x: the outcome of polling one task."""

    MISSING = 0
    PENDING = 1
    READY = 2
    LOCKED = 3
    LEASE_MISMATCH = 4


@dataclass
class PollResponse:
    """Pyncette 1.x: the result of polling one task (its state, when it is due, and the lease if taken)."""

    result: ResultType
    scheduled_at: datetime
    lease: Lease | None


@dataclass
class QueryResponse:
    """Pyncette 1.x: one page of due dynamic instances and their leases."""

    tasks: list[tuple[Task, Lease]]
    continuation_token: ContinuationToken | None


__all__ = [
    "AppContext",
    "Context",
    "ContinuationToken",
    "Decorator",
    "ExecutionMode",
    "FailureMode",
    "FixtureFunc",
    "Heartbeater",
    "HistoryEntry",
    "Lease",
    "ListTasksResponse",
    "MiddlewareFunc",
    "NextFunc",
    "Orphan",
    "PartitionSelector",
    "Pause",
    "PollResponse",
    "QueryResponse",
    "ResultType",
    "TaskDescription",
    "TaskFunc",
    "TaskState",
    "TickListener",
    "validate_context_names",
]
