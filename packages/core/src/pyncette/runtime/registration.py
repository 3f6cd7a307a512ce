"""Registration: writing and removing dynamic instances for :class:`~pyncette.PyncetteContext`.

``schedule_task``, ``schedule_tasks`` and ``unschedule_task`` delegate here. A registration is validated
and built (reusing the instance and spec built last from equal options), written through a group commit
(concurrent calls share round trips, see :mod:`pyncette.runtime.batching`), then announced: the loop
learns its next run, listeners get :class:`~pyncette.events.Scheduled` for the instances written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .. import events
from ..abc import Record, RegisterMode, Repository
from ..clock import Clock
from ..errors import ConfigurationError, TaskLockedException
from ..runstate import RunState
from ..task import DynamicTask, Instance, Task
from .batching import GroupCommit
from .control import record_key
from .description import AppDescription

#: Records per register call when scheduling in bulk.
REGISTER_CHUNK = 1000


class Registrar:
    """Creates, updates and removes the dynamic instances of a context."""

    def __init__(
        self,
        description: AppDescription,
        repository: Repository,
        clock: Clock,
        planned: Callable[[Task, datetime], None],
    ) -> None:
        self._description = description
        self._clock = clock
        self._planned = planned
        self._registrations: GroupCommit[Record, RegisterMode] = GroupCommit(
            lambda mode, records, now: repository.register(records, now=now, mode=mode)
        )
        self._deletions: GroupCommit[tuple[str, str], None] = GroupCommit(
            lambda _, keys, now: repository.delete_many(keys)
        )
        #: Per template, the options, instance and spec last built (reused for equal options).
        self._prototypes: dict[DynamicTask, tuple[dict[str, Any], Instance, str]] = {}

    async def schedule(self, task: Task, instance_name: str, force: bool, options: Mapping[str, Any]) -> Instance:
        """Create or update one instance (``PyncetteContext.schedule_task``)."""
        template = template_of(task)
        now = self._clock.now()
        instance, spec, first = self._prototype(template, instance_name, options, now)
        parent, name = instance.storage_key()
        record = Record(parent, name, spec, first, state=self._origin_state())
        [written] = await self._registrations.submit((record,), kind=_mode(force), now=now)
        self._announce(((instance, record, written),), now)
        if not written:
            raise _locked(task, [instance])
        return instance

    async def schedule_many(
        self, task: Task, instances: Mapping[str, Mapping[str, Any]], force: bool
    ) -> list[Instance]:
        """Create or update many instances, all validated first (``PyncetteContext.schedule_tasks``)."""
        template = template_of(task)
        now = self._clock.now()
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

    async def unschedule(self, task: Task, instance_name: str | None) -> None:
        """Remove one instance (``PyncetteContext.unschedule_task``)."""
        if not task.dynamic:
            raise ConfigurationError(f"{task!r} is a static task; only dynamic instances can be unscheduled")
        await self._deletions.submit((record_key(task, instance_name),), kind=None, now=self._clock.now())

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
        capture = self._description.capture_origin
        origin = capture() if capture is not None else None
        return RunState(origin=origin).encode() if origin else None

    def _announce(self, registered: Iterable[tuple[Instance, Record, bool]], now: datetime) -> None:
        """Tell the loop about the registered instances, and listeners about the ones written."""
        planned = self._planned
        listeners = self._description.listeners
        announce = listeners.wants(events.Scheduled)
        for instance, record, written in registered:
            planned(instance, record.scheduled_at)
            if announce and written:
                listeners.emit(events.Scheduled(instance, record.scheduled_at, now))


def template_of(task: Task, action: str = "scheduled") -> DynamicTask:
    """``task`` as a dynamic template; :class:`~pyncette.errors.ConfigurationError` when it is not one."""
    if not isinstance(task, DynamicTask):
        raise ConfigurationError(f"{task!r} is not a dynamic task; only dynamic tasks have instances {action}")
    return task


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


__all__ = ["REGISTER_CHUNK", "Registrar", "template_of"]
