"""Tiny backends used to test the suite itself: one correct, two deliberately broken.

``SharedMemoryBackend`` is also the smallest complete third-party backend:
the in-memory repository shared by every app of the process that uses the
same ``shared_namespace``, so multi-app tests have common storage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, ClassVar

from pyncette._memory import MemoryRepository
from pyncette.abc import Backend, Capabilities, Completion, Lease, Record, Repository
from pyncette.errors import ConfigurationError


class SharedMemoryBackend(Backend):
    """A correct backend: in-process storage shared per namespace."""

    name = "shared"
    capabilities = Capabilities(persistent=True, coordinated=True)
    options: ClassVar[Mapping[str, str]] = {"shared_namespace": "which shared store to use"}
    repository_class: ClassVar[type[MemoryRepository]] = MemoryRepository
    stores: ClassVar[dict[str, MemoryRepository]] = {}

    def open(self, options: Mapping[str, Any]) -> AbstractAsyncContextManager[Repository]:
        mine = self.select_options(options)
        namespace = mine.get("shared_namespace", "default")
        if not str(namespace).isidentifier():
            raise ConfigurationError(f"invalid shared_namespace {namespace!r}: must be an identifier")
        return self._open(f"{type(self).__name__}:{namespace}")

    @contextlib.asynccontextmanager
    async def _open(self, key: str) -> AsyncIterator[Repository]:
        yield self.stores.setdefault(key, self.repository_class())

    async def purge(self, options: Mapping[str, Any]) -> None:
        namespace = self.select_options(options).get("shared_namespace", "default")
        self.stores.pop(f"{type(self).__name__}:{namespace}", None)


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


class DoubleRunningBackend(SharedMemoryBackend):
    repository_class = _NoLeaseRepository


class LosingBackend(SharedMemoryBackend):
    repository_class = _LosingRepository
