"""The ``memory`` backend: records in the running process, the default when no storage is configured.

No persistence and no coordination between processes. Each open repository
has a store of its own, unless ``memory_namespace`` names one: apps of one
process that give the same namespace share its store (until it is purged).

Each parent keeps a heap ordered by the time its records next become
claimable, so claiming is O(k log n) for k claimed records rather than a
scan of everything stored.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import ClassVar

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .abc import Backend, Capabilities, Completion, Lease, PauseRule, Record, RegisterMode, Repository
from .options import Identifier, Option, Options, Settings


@dataclass
class _Parent:
    records: dict[str, Record] = field(default_factory=dict)
    # (claimable_at, sequence, name, version); stale entries are skipped lazily.
    heap: list[tuple[datetime, int, str, int]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    # Pause rules by (match, prefix), and the names they hold (kept out of the heap until resumed).
    rules: dict[tuple[str, bool], PauseRule] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)

    def paused(self, name: str) -> bool:
        return any(rule.matches(name) for rule in self.rules.values())


def _copy(
    record: Record, scheduled_at: datetime, until: datetime | None, token: str | None, state: str | None
) -> Record:
    """A copy of ``record`` with these fields changed: what claims and commits store, one per record.

    The positional constructor, rather than ``dataclasses.replace`` (which looks the fields up by name) or a
    copy of ``__dict__`` (which gives every record a dictionary object for the garbage collector to track).
    """
    return Record(record.parent, record.name, record.spec, scheduled_at, until, token, record.corrupt, state)


class MemoryRepository(Repository):
    """Keeps records in dictionaries of the running process."""

    def __init__(self) -> None:
        self._parents: dict[str, _Parent] = {}
        self._sequence = itertools.count()
        # Wake-up subscribers (apps of this process sharing the store): best effort, a full one misses hints.
        self._listeners: set[MemoryObjectSendStream[datetime]] = set()

    def wakeups(self) -> AbstractAsyncContextManager[AsyncIterator[datetime]]:
        return self._subscribe()

    @contextlib.asynccontextmanager
    async def _subscribe(self) -> AsyncIterator[AsyncIterator[datetime]]:
        send, receive = anyio.create_memory_object_stream[datetime](1000)
        self._listeners.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._listeners.discard(send)
            send.close()

    def _hint(self, due: datetime) -> None:
        for listener in list(self._listeners):
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
                listener.send_nowait(due)

    def _parent(self, parent: str) -> _Parent:
        group = self._parents.get(parent)
        if group is None:
            group = self._parents[parent] = _Parent()
        return group

    def _store(self, group: _Parent, record: Record) -> None:
        version = group.versions.get(record.name, 0) + 1
        group.versions[record.name] = version
        group.records[record.name] = record
        if group.rules and group.paused(record.name):
            group.held.add(record.name)
            return
        claimable_at = record.scheduled_at
        if record.locked_until is not None and record.locked_until > claimable_at:
            claimable_at = record.locked_until
        heapq.heappush(group.heap, (claimable_at, next(self._sequence), record.name, version))

    def _remove(self, group: _Parent, name: str) -> None:
        del group.records[name]
        group.versions[name] = group.versions.get(name, 0) + 1
        group.held.discard(name)

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        results = self._register(records, now, mode)
        if self._listeners:
            written = [r.scheduled_at for r, ok in zip(records, results, strict=True) if ok]
            if written:
                self._hint(min(written))
        return results

    def _register(self, records: Sequence[Record], now: datetime, mode: RegisterMode) -> list[bool]:
        results = []
        for record in records:
            group = self._parent(record.parent)
            existing = group.records.get(record.name)
            fresh = replace(record, locked_until=None, locked_by=None)
            if existing is None or mode is RegisterMode.FORCE:
                self._store(group, fresh)
                results.append(True)
            elif mode is RegisterMode.CREATE or (existing.locked_until is not None and existing.locked_until > now):
                results.append(False)
            else:
                scheduled_at = min(existing.scheduled_at, record.scheduled_at)
                self._store(group, replace(existing, spec=record.spec, scheduled_at=scheduled_at))
                results.append(True)
        return results

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        group = self._parents.get(parent)
        claimed: list[Record] = []
        if group is None:
            return claimed
        heap = group.heap
        while heap and len(claimed) < limit and heap[0][0] <= now:
            _, _, name, version = heapq.heappop(heap)
            if group.versions.get(name) != version or name not in group.records:
                continue
            stored = group.records[name]
            record = _copy(stored, stored.scheduled_at, lease_until, token, stored.state)
            self._store(group, record)
            claimed.append(record)
        return claimed

    def _leased(self, parent: str, name: str, token: str) -> tuple[_Parent, Record] | None:
        group = self._parents.get(parent)
        if group is None:
            return None
        record = group.records.get(name)
        if record is None or record.locked_by != token:
            return None
        return group, record

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        results = []
        for item in completions:
            found = self._leased(item.parent, item.name, item.token)
            if found is None:
                results.append(False)
                continue
            group, record = found
            if item.next_at is None:
                self._remove(group, item.name)
            else:
                state = record.state if item.state is None else item.state
                locked_until, locked_by = (None, None) if item.release else (record.locked_until, record.locked_by)
                self._store(group, _copy(record, item.next_at, locked_until, locked_by, state))
            results.append(True)
        return results

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        results = []
        for lease in leases:
            found = self._leased(lease.parent, lease.name, lease.token)
            if found is not None:
                group, record = found
                self._store(group, replace(record, locked_until=None, locked_by=None))
            results.append(found is not None)
        return results

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        found = self._leased(lease.parent, lease.name, lease.token)
        if found is None:
            return False
        group, record = found
        self._store(group, replace(record, locked_until=lease_until))
        return True

    async def delete(self, parent: str, name: str) -> bool:
        group = self._parents.get(parent)
        if group is None or name not in group.records:
            return False
        self._remove(group, name)
        return True

    async def get(self, parent: str, name: str) -> Record | None:
        group = self._parents.get(parent)
        return None if group is None else group.records.get(name)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        group = self._parents.get(parent)
        if group is None:
            return [], None
        names = sorted(n for n in group.records if continuation is None or n > continuation)
        page = [group.records[n] for n in names[:limit]]
        return page, (page[-1].name if len(names) > limit else None)

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        group = self._parent(rule.parent)
        group.rules[rule.match, rule.prefix] = rule
        matched = [name for name in group.records if rule.matches(name)]
        for name in matched:
            if name not in group.held:
                group.held.add(name)
                group.versions[name] = group.versions.get(name, 0) + 1  # drops its heap entry
        return len(matched)

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        group = self._parents.get(parent)
        if group is None or group.rules.pop((match, prefix), None) is None:
            return False
        for name in [name for name in group.held if not group.paused(name)]:
            group.held.discard(name)
            self._store(group, group.records[name])
        self._hint(now)
        return True

    async def pauses(self, parent: str) -> list[PauseRule]:
        group = self._parents.get(parent)
        return [] if group is None else list(group.rules.values())

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        group = self._parents.get(parent)
        record = None if group is None else group.records.get(name)
        if group is None or record is None or record.scheduled_at != expected:
            return False
        if record.locked_until is not None and record.locked_until > now:
            return False
        self._store(group, replace(record, scheduled_at=scheduled_at, state=record.state if state is None else state))
        self._hint(scheduled_at)
        return True

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        names = sorted(p for p, g in self._parents.items() if g.records and (continuation is None or p > continuation))
        return names[:limit], (names[limit - 1] if len(names) > limit else None)

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        group = self._parent(parent)
        group.records[name] = replace(group.records[name], spec=raw)


class MemoryBackend(Backend):
    """``memory``: records in this process only (the default backend)."""

    name = "memory"
    capabilities = Capabilities(control=True, notifications=True)
    options = Options(
        Option(
            "memory_namespace",
            Identifier(r"[A-Za-z0-9_]{0,64}", "up to 64 letters, digits or underscores"),
            "share one store between the apps of this process that give the same name ('' : a store of its own)",
            default="",
            isolates=True,
        ),
    )
    #: Named stores of this process.
    stores: ClassVar[dict[str, MemoryRepository]] = {}

    def open(self, settings: Settings) -> AbstractAsyncContextManager[Repository]:
        return self._open(settings["memory_namespace"])

    @contextlib.asynccontextmanager
    async def _open(self, namespace: str) -> AsyncIterator[Repository]:
        yield self.stores.setdefault(namespace, MemoryRepository()) if namespace else MemoryRepository()

    async def purge(self, settings: Settings) -> None:
        self.stores.pop(settings["memory_namespace"], None)


backend = MemoryBackend()

__all__ = ["MemoryBackend", "MemoryRepository", "backend"]
