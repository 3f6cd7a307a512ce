"""The control plane: pausing and resuming tasks, triggering a run now, and pruning what the code no longer has.

Everything here is stored (through the optional control methods of :class:`~pyncette.abc.Repository`), so
every process sharing the storage obeys it: a pause within one poll, a triggered run by whichever process
claims it first.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Literal, TypeVar

from ..abc import PauseRule, Repository
from ..clock import Clock
from ..errors import ConfigurationError
from ..model import HistoryEntry, Orphan, Pause
from ..runstate import decode
from ..task import DynamicTask, Instance, StaticTask, Task
from . import history
from .description import AppDescription

#: What :meth:`Control.run_now` did: ``queued`` (the run is stored as due now), ``due`` (a run was due
#: already: that run is the next to start), ``running`` (a run holds the task right now; nothing was queued).
RunNow = Literal["queued", "due", "running"]

T = TypeVar("T")

#: Longest note kept with a pause.
MAX_NOTE = 500
#: Records deleted per call while pruning.
PRUNE_PAGE = 500


class Control:
    """Pause, resume, run now and prune, for :class:`~pyncette.PyncetteContext`."""

    def __init__(
        self,
        description: AppDescription,
        repository: Repository,
        clock: Clock,
        planned: Callable[[Task, datetime], None],
    ) -> None:
        self._description = description
        self._repository = repository
        self._clock = clock
        self._planned = planned

    async def pause(
        self,
        task: Task,
        instance_name: str | None = None,
        *,
        prefix: str | None = None,
        note: str | None = None,
        by: str | None = None,
    ) -> int | None:
        """Store a pause; return how many stored records it holds (``None`` when the backend cannot tell)."""
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise ConfigurationError(f"invalid note {repr(note)[:40]}: must be text of at most {MAX_NOTE} characters")
        if by is not None and (not isinstance(by, str) or len(by) > 200):
            raise ConfigurationError(f"invalid by {repr(by)[:40]}: must be text of at most 200 characters")
        now = self._clock.now()
        info = json.dumps({"note": note, "by": by, "at": now.isoformat()}, ensure_ascii=False)
        total: int | None = 0
        for parent, match, is_prefix in _targets(task, instance_name, prefix):
            count = await self._call(
                "pause", self._repository.pause(PauseRule(parent, match, is_prefix, info), now=now)
            )
            total = None if total is None or count is None else total + count
        return total

    async def resume(self, task: Task, instance_name: str | None = None, *, prefix: str | None = None) -> bool:
        """Remove the pause stored with the same arguments; ``False`` when there was none."""
        now = self._clock.now()
        removed = False
        for parent, match, is_prefix in _targets(task, instance_name, prefix):
            removed |= await self._call("resume", self._repository.resume(parent, match, prefix=is_prefix, now=now))
        if removed:  # this process looks at once; the others within a poll interval
            self._planned(_owner(task), now)
        return removed

    async def pauses(self, task: Task) -> list[Pause]:
        """Every pause stored for a static task or a template (its instances and prefixes included)."""
        owner = _owner(task)
        found: dict[tuple[str, bool], Pause] = {}
        for parent in _parents(owner):
            for rule in await self._call("list pauses", self._repository.pauses(parent)):
                found.setdefault((rule.match, rule.prefix), _pause(owner, rule))
        return sorted(found.values(), key=lambda p: (p.scope != "task", p.match, p.scope))

    async def pause_of(self, task: Task, parent: str, name: str) -> Pause | None:
        """The widest pause holding the record ``(parent, name)`` of ``task``, ``None`` when none does (or the
        backend has no control plane)."""
        try:
            stored = await self._repository.pauses(parent)
        except NotImplementedError:
            return None
        rules = [r for r in stored if r.matches(name)]
        if not rules:
            return None
        widest = min(rules, key=lambda r: (not r.prefix, len(r.match)))
        return _pause(_owner(task), widest)

    async def run_now(self, task: Task, instance_name: str | None = None) -> RunNow:
        """Store one extra run of a static task or an instance as due now, keeping its regular next run."""
        parent, name = record_key(task, instance_name)
        for _ in range(10):  # a run committed between our read and write makes us read again
            now = self._clock.now()
            record = await self._repository.get(parent, name)
            if record is None:
                raise ConfigurationError(f"{task!r} is not stored: nothing to run (is the app registered?)")
            if record.locked_until is not None and record.locked_until > now:
                return "running"
            if record.scheduled_at <= now:
                return "due"
            state = replace(decode(record.state), regular=record.scheduled_at).encode()
            written = await self._call(
                "run now",
                self._repository.reschedule(
                    parent, name, expected=record.scheduled_at, scheduled_at=now, state=state, now=now
                ),
            )
            if written:
                self._planned(task, now)
                return "queued"
        raise ConfigurationError(f"{task!r} kept changing while being triggered; try again")

    async def history(self, task: Task, instance_name: str | None = None) -> list[HistoryEntry]:
        """The last runs of a static task or an instance, newest first (``[]`` without ``history=``)."""
        parent, name = record_key(task, instance_name)
        record = await self._repository.get(parent, name)
        if record is None:
            return []
        policies = task.policies
        if isinstance(task, DynamicTask) and record.spec is not None:  # the instance's own options
            policies = task.from_spec(name, record.spec).policies
        if not policies.history:
            return []
        runs = decode(record.state).runs
        return await history.read(self._repository, parent, name, runs, policies, self._clock.now())

    async def orphans(self) -> list[Orphan]:
        """The parents in storage that no task of the app owns (static tasks and templates removed from code,
        partitions beyond a template's ``partition_count``), with their record counts."""
        known = {parent for task in self._description.static_tasks for parent in _parents(task)}
        known.update(parent for template in self._description.templates for parent in _parents(template))
        known.update([history.parent_of(parent) for parent in known])
        found: list[Orphan] = []
        token: str | None = None
        while True:
            page, token = await self._call("list parents", self._repository.parents(limit=100, continuation=token))
            for parent in page:
                if parent not in known:
                    found.append(Orphan(parent, await self._count(parent)))
            if token is None:
                return found

    async def prune(self, *, dry_run: bool = True) -> list[Orphan]:
        """:meth:`orphans`, deleted unless ``dry_run`` (the default)."""
        found = await self.orphans()
        if dry_run:
            return found
        pruned = []
        for orphan in found:
            deleted = 0
            while True:
                page, _ = await self._repository.list_page(orphan.parent, limit=PRUNE_PAGE, continuation=None)
                if not page:
                    break
                for record in page:
                    deleted += await self._repository.delete(orphan.parent, record.name)
            for rule in await self._repository.pauses(orphan.parent):
                await self._repository.resume(rule.parent, rule.match, prefix=rule.prefix, now=self._clock.now())
            pruned.append(Orphan(orphan.parent, deleted, deleted=True))
        return pruned

    async def _count(self, parent: str) -> int:
        count, token = 0, None
        while True:
            page, token = await self._repository.list_page(parent, limit=PRUNE_PAGE, continuation=token)
            count += len(page)
            if token is None:
                return count

    @staticmethod
    async def _call(what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except NotImplementedError:
            raise ConfigurationError(
                f"cannot {what}: the storage backend does not implement the control plane "
                "(it does not declare the 'control' capability)"
            ) from None


def _owner(task: Task) -> StaticTask | DynamicTask:
    """The static task or template a task, template or instance belongs to."""
    if isinstance(task, Instance):
        return task.template
    if isinstance(task, (StaticTask, DynamicTask)):
        return task
    raise ConfigurationError(f"invalid task {task!r}: pass a task, a dynamic template or an instance")


def _parents(owner: StaticTask | DynamicTask) -> list[str]:
    return [owner.storage_key()[0]] if isinstance(owner, StaticTask) else owner.all_parents()


def _targets(task: Task, instance_name: str | None, prefix: str | None) -> list[tuple[str, str, bool]]:
    """The rules ``(parent, match, prefix)`` a pause of these arguments stores."""
    if isinstance(task, Instance):
        if instance_name is not None or prefix is not None:
            raise ConfigurationError(f"{task!r} is an instance: pass neither instance_name nor prefix")
        task, instance_name = task.template, task.name
    owner = _owner(task)
    if isinstance(owner, StaticTask):
        if instance_name is not None or prefix is not None:
            raise ConfigurationError(f"{owner!r} is a static task: it has no instances (no instance_name or prefix)")
        return [(owner.storage_key()[0], "", True)]
    if instance_name is not None and prefix is not None:
        raise ConfigurationError("pass instance_name or prefix, not both")
    if instance_name is not None:
        parent, name = owner.instance_key(instance_name)
        return [(parent, name, False)]
    if prefix is not None:
        if not isinstance(prefix, str) or not prefix or len(prefix) > 1000:
            raise ConfigurationError(f"invalid prefix {repr(prefix)[:40]}: must be text of 1 to 1000 characters")
        return [(parent, prefix, True) for parent in owner.all_parents()]
    return [(parent, "", True) for parent in owner.all_parents()]


def record_key(task: Task, instance_name: str | None) -> tuple[str, str]:
    """Where the record of a static task, an instance, or a template's named instance lives: (parent, name)."""
    if isinstance(task, DynamicTask):
        if instance_name is None:
            raise ConfigurationError(f"{task!r} is a dynamic template: pass the instance name too")
        return task.instance_key(instance_name)
    if instance_name is not None:
        kind = "an instance" if isinstance(task, Instance) else "a static task"
        raise ConfigurationError(f"{task!r} is {kind}: it has no instance {instance_name!r}")
    return task.storage_key()


def _pause(owner: StaticTask | DynamicTask, rule: PauseRule) -> Pause:
    scope = "task" if rule.prefix and not rule.match else "prefix" if rule.prefix else "instance"
    note = by = at = None
    try:
        info = json.loads(rule.info) if rule.info else {}
    except ValueError:
        info = {}
    if isinstance(info, dict):
        note = info.get("note") if isinstance(info.get("note"), str) else None
        by = info.get("by") if isinstance(info.get("by"), str) else None
        try:
            at = datetime.fromisoformat(info["at"]) if isinstance(info.get("at"), str) else None
        except ValueError:
            at = None
    return Pause(owner.name, scope, rule.match, note, by, at)


__all__ = ["Control", "RunNow", "record_key"]
