"""Tiny backends used to test the suite itself: one correct, the others deliberately broken.

``SharedMemoryBackend`` is also the smallest complete third-party backend:
the in-memory repository shared by every app of the process that uses the
same ``shared_namespace``, so multi-app tests have common storage.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import ClassVar

from pyncette.abc import Backend, Capabilities, Completion, Lease, PauseRule, Record, Repository
from pyncette.memory import MemoryRepository
from pyncette.options import Identifier, Option, Options, Settings


class SharedMemoryBackend(Backend):
    """A correct backend: in-process storage shared per namespace."""

    name = "shared"
    capabilities = Capabilities(persistent=True, coordinated=True, control=True)
    options = Options(
        Option(
            "shared_namespace",
            Identifier(r"[A-Za-z_][A-Za-z0-9_]*", "a Python identifier"),
            "which shared store to use",
            default="default",
            isolates=True,
        )
    )
    repository_class: ClassVar[type[MemoryRepository]] = MemoryRepository
    stores: ClassVar[dict[str, MemoryRepository]] = {}

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Repository]:
        yield self.stores.setdefault(self._key(settings), self.repository_class())

    async def purge(self, settings: Settings) -> None:
        self.stores.pop(self._key(settings), None)

    def _key(self, settings: Settings) -> str:
        return f"{type(self).__name__}:{settings['shared_namespace']}"


class _NoLeaseRepository(MemoryRepository):
    """Broken: claims hand out due records but do not keep the lease, so other claims get them too."""

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        claimed = await super().claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)
        await super().unlock([Lease(r.parent, r.name, token) for r in claimed])
        return claimed


class _LosingRepository(MemoryRepository):
    """Broken: a commit deletes the record instead of rescheduling it, so recurring tasks vanish."""

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        return await super().commit([Completion(c.parent, c.name, c.token, None) for c in completions])


class _StateDroppingRepository(MemoryRepository):
    """Broken: a commit reschedules but ignores the state it carries, so attempt counters never advance."""

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        return await super().commit(
            [Completion(c.parent, c.name, c.token, c.next_at, release=c.release) for c in completions]
        )


class _ReleasingRepository(MemoryRepository):
    """Broken: a commit always releases the lease, so a run meant to stay "running" can be claimed again."""

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        return await super().commit([Completion(c.parent, c.name, c.token, c.next_at, c.state) for c in completions])


class _ScanningRepository(MemoryRepository):
    """Slow by design, like a key-value store without an ordered index: a claim decodes every record of the parent."""

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        for _ in range(len(self._parents[parent].records) if parent in self._parents else 0):
            json.loads('{"s": 1893456000.0, "d": {"args": {}}, "l": null, "t": null}')
        return await super().claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)


class _PauseListingRepository(MemoryRepository):
    """Broken: pauses are listed but not obeyed (the rule never reaches the claim)."""

    def __init__(self) -> None:
        super().__init__()
        self._listed: dict[tuple[str, str, bool], PauseRule] = {}

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        self._listed[rule.parent, rule.match, rule.prefix] = rule
        return None

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        return self._listed.pop((parent, match, prefix), None) is not None

    async def pauses(self, parent: str) -> list[PauseRule]:
        return [rule for rule in self._listed.values() if rule.parent == parent]


class _TriggerMovingRepository(MemoryRepository):
    """Broken: a reschedule drops the state it carries, so a triggered run loses the regular next run."""

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        return await super().reschedule(parent, name, expected=expected, scheduled_at=scheduled_at, state=None, now=now)


class PauseListingBackend(SharedMemoryBackend):
    repository_class = _PauseListingRepository


class TriggerMovingBackend(SharedMemoryBackend):
    repository_class = _TriggerMovingRepository


class ScanningBackend(SharedMemoryBackend):
    repository_class = _ScanningRepository


class DoubleRunningBackend(SharedMemoryBackend):
    repository_class = _NoLeaseRepository


class LosingBackend(SharedMemoryBackend):
    repository_class = _LosingRepository


class StateDroppingBackend(SharedMemoryBackend):
    repository_class = _StateDroppingRepository


class ReleasingBackend(SharedMemoryBackend):
    repository_class = _ReleasingRepository
