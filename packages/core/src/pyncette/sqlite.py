"""The embedded backend: in memory by default, or a SQLite file (``sqlite_database="pyncette.db"``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from .abc import Backend, Capabilities, Repository
from ._memory import MemoryRepository

MEMORY = ":memory:"


class SqliteBackend(Backend):
    """``sqlite``: the default backend. ``:memory:`` (the default) keeps everything in the process."""

    name = "sqlite"
    capabilities = Capabilities(persistent=True, coordinated=True)
    options = {
        "sqlite_database": "path of the database file; ':memory:' (default) keeps state in the process only",
        "sqlite_table_name": "table name (letters, digits, underscores; default 'pyncette_tasks')",
        "sqlite_timeout": "seconds to wait for another process's write lock (default 30)",
    }

    def open(self, options: Mapping[str, Any]) -> AbstractAsyncContextManager[Repository]:
        return self._open(self.select_options(options))

    @contextlib.asynccontextmanager
    async def _open(self, options: dict[str, Any]) -> AsyncIterator[Repository]:
        database = options.get("sqlite_database", MEMORY)
        if database == MEMORY:
            yield MemoryRepository()
            return
        raise NotImplementedError("sqlite files are not supported yet")


backend = SqliteBackend()
#: Pyncette 1.x name of the factory.
sqlite_repository = backend

__all__ = ["SqliteBackend", "backend", "sqlite_repository"]
