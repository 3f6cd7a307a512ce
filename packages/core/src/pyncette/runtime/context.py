"""The running app as applications see it: :class:`PyncetteContext`, the object ``app.create()`` yields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..abc import PARKED_AT, Record, Repository
from ..clock import Clock
from ..errors import ConfigurationError, RecordDecodeError
from ..model import HistoryEntry, ListTasksResponse, Orphan, Pause, TaskDescription, TaskState, validate_context_names
from ..redaction import get_logger
from ..runstate import decode
from ..task import Instance, Task
from .control import Control, RunNow, record_key
from .description import AppDescription
from .registration import Registrar, template_of
from .scheduler import Scheduler

logger = get_logger("pyncette")


class PyncetteContext:
    """A running (or ready to run) Pyncette app bound to open storage.

    Attributes:
        app: the :class:`~pyncette.Pyncette` app it was created from.
        description: the app's settings and tasks as this context uses them (fixed at creation).
        repository: the open storage.
        clock: the clock the app runs on (real time, or a virtual clock in tests).
    """

    def __init__(
        self, app: Any, description: AppDescription, repository: Repository, clock: Clock, values: dict[str, Any]
    ) -> None:
        self.app = app
        self.description = description
        self.repository = repository
        self.clock = clock
        self._values = values
        self._scheduler = Scheduler(self, description, repository, clock, values)
        self._control = Control(description, repository, clock, self._scheduler.agenda.planned)
        # Writes and removes dynamic instances (see pyncette.runtime.registration).
        self._registrar = Registrar(description, repository, clock, self._scheduler.agenda.planned)

    # -- running ----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown`: claim due work, run it, sleep until the next run or ``poll_interval``."""
        await self._scheduler.run(task_status=task_status)

    def shutdown(self) -> None:
        """Stop claiming work; running tasks finish and their commits land, then :meth:`run` returns."""
        self._scheduler.shutdown()

    def cancel(self) -> None:
        """Stop at once, cancelling running tasks (their leases expire and they are retried elsewhere)."""
        self._scheduler.cancel()

    @property
    def shutting_down(self) -> bool:
        """Whether :meth:`shutdown` (or :meth:`cancel`) was called."""
        return self._scheduler.shutting_down

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` stopped the app (running tasks were cut short)."""
        return self._scheduler.cancelled

    @property
    def last_tick(self) -> datetime | None:
        """When the scheduler loop last finished a pass (``None`` before the first)."""
        return self._scheduler.last_tick

    def add_to_context(self, name: str, value: Any) -> None:
        """Make ``value`` available as ``context.<name>`` in every task."""
        validate_context_names([name])
        if name in self._values:
            raise ConfigurationError(f"context name {name!r} is already in use")
        self._values[name] = value

    # -- dynamic instances ------------------------------------------------------------------------

    async def schedule_task(self, task: Task, instance_name: str, *, force: bool = False, **options: Any) -> Instance:
        """Create or update a dynamic instance and return it.

        An existing instance keeps the sooner of its stored and its new next run.
        Raises :class:`TaskLockedException` while the instance is running, unless
        ``force=True``, which overwrites it and its lease (the running one then cannot commit).
        Concurrent calls share storage round trips (see :mod:`pyncette.runtime.batching`).
        """
        return await self._registrar.schedule(task, instance_name, force, options)

    async def schedule_tasks(
        self, task: Task, instances: Mapping[str, Mapping[str, Any]], *, force: bool = False
    ) -> list[Instance]:
        """Bulk :meth:`schedule_task`: ``{instance_name: options}``, written in as few round trips as possible.

        Every instance is validated before anything is written. Every instance that is not running is
        written; if some were running (and ``force`` is false), :class:`TaskLockedException` is raised
        afterwards, naming them.
        """
        return await self._registrar.schedule_many(task, instances, force)

    async def unschedule_task(self, task: Task, instance_name: str | None = None) -> None:
        """Remove a dynamic instance (pass the instance, or the template and the instance name).

        Concurrent calls share storage round trips, as :meth:`schedule_task` calls do.
        """
        await self._registrar.unschedule(task, instance_name)

    async def get_task(self, task: Task, instance_name: str | None = None) -> TaskState | None:
        """The stored state of a static task or a dynamic instance, or ``None``.

        Raises :class:`~pyncette.errors.RecordDecodeError` for a stored instance that cannot be decoded.
        """
        found = await self._read(task, instance_name)
        return None if found is None else found[1]

    async def _read(self, task: Task, instance_name: str | None) -> tuple[Record, TaskState] | None:
        """The stored record of a static task or an instance and its state (the instance decoded)."""
        parent, name = record_key(task, instance_name)
        record = await self.repository.get(parent, name)
        if record is None:
            return None
        concrete = task if not task.dynamic else (task.template or template_of(task)).from_record(record)
        return record, TaskState.from_record(concrete, record)

    async def describe_task(
        self, task: Task, instance_name: str | None = None, *, next_runs: int = 5
    ) -> TaskDescription | None:
        """:meth:`get_task` plus the next ``next_runs`` (1 to 1000) scheduled runs; ``None`` when not stored."""
        if not isinstance(next_runs, int) or isinstance(next_runs, bool) or not 1 <= next_runs <= 1000:
            raise ConfigurationError(f"invalid next_runs {next_runs!r}: must be an integer from 1 to 1000")
        found = await self._read(task, instance_name)
        if found is None:
            return None
        record, state = found
        schedule = state.task.schedule
        assert schedule is not None
        upcoming: list[datetime] = []
        stored = decode(record.state)
        if stored.regular is not None:  # a triggered run waits, then the regular one
            upcoming.append(record.scheduled_at.astimezone(state.task.tz))
        moment: datetime | None = stored.nominal or stored.regular or record.scheduled_at
        while moment is not None and len(upcoming) < next_runs and moment < PARKED_AT:
            upcoming.append(moment.astimezone(state.task.tz))
            moment = schedule.next_after(moment)
        paused = await self._control.pause_of(task, record.parent, record.name)
        return TaskDescription(state, upcoming, paused)

    # -- the control plane (stored: every process sharing the storage obeys) -------------------------

    async def pause_task(
        self,
        task: Task,
        instance_name: str | None = None,
        *,
        prefix: str | None = None,
        note: str | None = None,
        by: str | None = None,
    ) -> int | None:
        """Pause a static task, a template (every instance, present and future), one instance, or the
        instances whose name starts with ``prefix``, with an optional ``note`` and who paused (``by``).

        No process claims its runs until :meth:`resume_task` is called with the same arguments; a run in
        progress finishes. Returns how many stored records it holds now (``None`` if the backend cannot tell).
        """
        return await self._control.pause(task, instance_name, prefix=prefix, note=note, by=by)

    async def resume_task(self, task: Task, instance_name: str | None = None, *, prefix: str | None = None) -> bool:
        """Remove the pause :meth:`pause_task` stored with the same arguments (``False``: there was none).

        Runs missed meanwhile are then due: the task's catch-up policy (``catchup_window``, ``coalesce``)
        decides what happens to them.
        """
        return await self._control.resume(task, instance_name, prefix=prefix)

    async def list_pauses(self, task: Task) -> list[Pause]:
        """The pauses stored for a static task or a template (whole, per instance and per prefix)."""
        return await self._control.pauses(task)

    async def run_task_now(self, task: Task, instance_name: str | None = None) -> RunNow:
        """Trigger one extra run of a static task or an instance, as soon as a process claims it, without
        moving its regular schedule: ``"queued"``; ``"due"`` when a run is due already (that one comes first);
        ``"running"`` when a run holds the task now (nothing is queued: the overlap policy is kept).

        The triggered run is tried once (no retry, no catch-up rule). A paused task's triggered run waits
        for the resume.
        """
        return await self._control.run_now(task, instance_name)

    async def task_history(self, task: Task, instance_name: str | None = None) -> list[HistoryEntry]:
        """The last runs of a static task or an instance, newest first: kept only for tasks with the
        ``history=N`` option (at most ``N``, none older than ``history_max_age``); ``[]`` otherwise."""
        return await self._control.history(task, instance_name)

    async def prune(self, *, dry_run: bool = True) -> list[Orphan]:
        """The records in storage that no task of this app owns any more (static tasks and templates removed
        from the code), deleted unless ``dry_run`` (the default): list first, then prune."""
        return await self._control.prune(dry_run=dry_run)

    async def list_tasks(
        self, task: Task, limit: int | None = None, continuation_token: str | None = None
    ) -> ListTasksResponse:
        """Page through every instance of a dynamic task (order unspecified); undecodable ones are skipped
        (and logged)."""
        template = template_of(task, "listed")
        page_size = limit if limit is not None else self.description.batch_size
        if not isinstance(page_size, int) or page_size < 1:
            raise ConfigurationError(f"invalid limit {limit!r}: must be an integer >= 1")
        states: list[TaskState] = []
        token = continuation_token
        while len(states) < page_size:
            records, token = await self.list_records(template, page_size - len(states), token)
            for record in records:
                try:
                    states.append(TaskState.from_record(template.from_record(record), record))
                except RecordDecodeError as exc:
                    logger.warning("Listing %r: skipping a record that cannot be decoded: %s", template.name, exc)
            if token is None:
                break
        return ListTasksResponse(states, token)

    async def list_records(
        self, task: Task, limit: int, continuation_token: str | None = None
    ) -> tuple[list[Record], str | None]:
        """Page through the stored records of a dynamic task's instances as they are stored, undecodable ones
        included (with :attr:`~pyncette.abc.Record.corrupt` set): at most ``limit`` (every partition in
        turn), and the token of the next page, ``None`` after the last. Tokens are those of :meth:`list_tasks`.
        """
        template = template_of(task, "listed")
        if not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"invalid limit {limit!r}: must be an integer >= 1")
        parents = template.all_parents()
        index, inner = _position(continuation_token, len(parents))
        records: list[Record] = []
        while index < len(parents) and len(records) < limit:
            page, inner = await self.repository.list_page(
                parents[index], limit=limit - len(records), continuation=inner
            )
            records.extend(page)
            if inner is None:
                index += 1
        return records, (json.dumps([index, inner]) if index < len(parents) else None)


def _position(token: str | None, parents: int) -> tuple[int, str | None]:
    """Where a :meth:`PyncetteContext.list_records` token resumes: (index of the parent, its continuation)."""
    if token is None:
        return 0, None
    try:
        index, inner = json.loads(token)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid continuation_token {token!r}") from exc
    if not isinstance(index, int) or not 0 <= index < parents or not (inner is None or isinstance(inner, str)):
        raise ConfigurationError(f"invalid continuation_token {token!r}: not a position of this task")
    return index, inner


__all__ = ["PyncetteContext"]
