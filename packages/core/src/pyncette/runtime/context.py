"""The running app as applications see it: :class:`PyncetteContext`, the object ``app.create()`` yields."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .. import events
from ..abc import PARKED_AT, Record, RegisterMode, Repository
from ..clock import Clock
from ..errors import ConfigurationError, RecordDecodeError, TaskLockedException
from ..model import HistoryEntry, ListTasksResponse, Orphan, Pause, TaskDescription, TaskState, validate_context_names
from ..redaction import get_logger
from ..runstate import RunState, decode
from ..task import DynamicTask, Instance, Task
from .batching import GroupCommit
from .control import Control, RunNow, record_key
from .description import AppDescription
from .scheduler import Scheduler

logger = get_logger("pyncette")

#: Records per register call when scheduling in bulk.
REGISTER_CHUNK = 1000


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
        # Concurrent calls share round trips (see pyncette.runtime.batching).
        self._registrations: GroupCommit[Record, RegisterMode] = GroupCommit(
            lambda mode, records, now: repository.register(records, now=now, mode=mode)
        )
        self._deletions: GroupCommit[tuple[str, str], None] = GroupCommit(
            lambda _, keys, now: repository.delete_many(keys)
        )
        #: Per template, the options, instance and spec last built by schedule_tasks (reused for equal options).
        self._prototypes: dict[DynamicTask, tuple[dict[str, Any], Instance, str]] = {}

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
        template = _template(task)
        now = self.clock.now()
        instance, spec, first = self._prototype(template, instance_name, options, now)
        parent, name = instance.storage_key()
        record = Record(parent, name, spec, first, state=self._origin_state())
        [written] = await self._registrations.submit((record,), kind=_mode(force), now=now)
        self._announce(((instance, record, written),), now)
        if not written:
            raise _locked(task, [instance])
        return instance

    async def schedule_tasks(
        self, task: Task, instances: Mapping[str, Mapping[str, Any]], *, force: bool = False
    ) -> list[Instance]:
        """Bulk :meth:`schedule_task`: ``{instance_name: options}``, written in as few round trips as possible.

        Every instance is validated before anything is written. Every instance that is not running is
        written; if some were running (and ``force`` is false), :class:`TaskLockedException` is raised
        afterwards, naming them.
        """
        template = _template(task)
        now = self.clock.now()
        concrete: list[Instance] = []
        records: list[Record] = []
        state = self._origin_state()
        # Bulk callers usually give many instances the same options: build and encode those once.
        previous: Mapping[str, Any] | None = None
        prototype: Instance | None = None
        spec, first = "", now
        for instance_name, options in instances.items():
            if prototype is None or options != previous:
                instance, spec, first = self._prototype(template, instance_name, options, now)
                prototype, previous = instance, options
            else:
                instance = prototype.renamed(instance_name)
            parent, name = instance.storage_key()
            concrete.append(instance)
            records.append(Record(parent, name, spec, first, state=state))
        mode = _mode(force)
        written: list[bool] = []
        for start in range(0, len(records), REGISTER_CHUNK):
            written.extend(
                await self._registrations.submit(records[start : start + REGISTER_CHUNK], kind=mode, now=now)
            )
        self._announce(zip(concrete, records, written, strict=True), now)
        locked = [t for t, ok in zip(concrete, written, strict=True) if not ok]
        if locked:
            raise _locked(task, locked)
        return concrete

    def _prototype(
        self, template: DynamicTask, instance_name: str, options: Mapping[str, Any], now: datetime
    ) -> tuple[Instance, str, datetime]:
        """The instance, its encoded spec and its first run; reuses what the previous call built from equal
        (immutable) options, as web apps registering one instance per request mostly pass."""
        last = self._prototypes.get(template)
        if last is not None and options == last[0]:
            instance, spec = last[1].renamed(instance_name), last[2]
        else:
            instance = template.instantiate(instance_name, **dict(options))
            spec = instance.to_spec()
            if _immutable(options):
                self._prototypes[template] = (dict(options), instance, spec)
        assert instance.schedule is not None
        return instance, spec, instance.schedule.first(now)

    def _origin_state(self) -> str | None:
        """The record state naming where the registration came from, when the app captures that."""
        capture = self.description.capture_origin
        origin = capture() if capture is not None else None
        return RunState(origin=origin).encode() if origin else None

    def _announce(self, registered: Iterable[tuple[Instance, Record, bool]], now: datetime) -> None:
        """Tell the loop about the registered instances, and listeners about the ones written."""
        planned = self._scheduler.agenda.planned
        listeners = self.description.listeners
        announce = listeners.wants(events.Scheduled)
        for instance, record, written in registered:
            planned(instance, record.scheduled_at)
            if announce and written:
                listeners.emit(events.Scheduled(instance, record.scheduled_at, now))

    async def unschedule_task(self, task: Task, instance_name: str | None = None) -> None:
        """Remove a dynamic instance (pass the instance, or the template and the instance name).

        Concurrent calls share storage round trips, as :meth:`schedule_task` calls do.
        """
        if not task.dynamic:
            raise ConfigurationError(f"{task!r} is a static task; only dynamic instances can be unscheduled")
        await self._deletions.submit((record_key(task, instance_name),), kind=None, now=self.clock.now())

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
        concrete = task if not task.dynamic else (task.template or _template(task)).from_record(record)
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
        template = _template(task, "listed")
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
        template = _template(task, "listed")
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


_IMMUTABLE = (str, int, float, bool, type(None), datetime, timedelta)


def _immutable(options: Mapping[str, Any]) -> bool:
    """Whether ``options`` cannot change behind our back (so an instance built from them may be reused)."""
    return all(isinstance(value, _IMMUTABLE) for value in options.values())


def _locked(task: Task, locked: list[Instance]) -> TaskLockedException:
    """The error for instances that were not written because they are running."""
    names = ", ".join(t.name for t in locked[:10]) + (" ..." if len(locked) > 10 else "")
    return TaskLockedException(locked[0], f"{len(locked)} instance(s) of {task.name!r} are running: {names}")


def _mode(force: bool) -> RegisterMode:
    return RegisterMode.FORCE if force else RegisterMode.UPDATE


def _template(task: Task, action: str = "scheduled") -> DynamicTask:
    if not isinstance(task, DynamicTask):
        raise ConfigurationError(f"{task!r} is not a dynamic task; only dynamic tasks have instances {action}")
    return task


__all__ = ["PyncetteContext"]
