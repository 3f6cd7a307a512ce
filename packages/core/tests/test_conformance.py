"""The standard conformance suites on the embedded backends (memory, SQLite file), on asyncio and trio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sniffio

import pyncette.memory
import pyncette.sqlite
from pyncette_conformance import (
    BackendUnderTest,
    ControlContract,
    ControlSuite,
    CoordinationSuite,
    FaultSuite,
    IsolationSuite,
    NotificationSuite,
    PersistenceSuite,
    PolicySuite,
    RepositoryContract,
    ValidationSuite,
)
from pyncette_conformance.behaviour import BehaviourSuite


class _BothEventLoops:
    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        backend: str = request.param
        return backend

    async def test_runs_on_the_requested_event_loop(self, anyio_backend: str) -> None:
        assert sniffio.current_async_library() == anyio_backend
        if anyio_backend == "trio":
            with pytest.raises(RuntimeError):
                asyncio.get_running_loop()
        else:
            asyncio.get_running_loop()


class _InMemory(_BothEventLoops):
    @pytest.fixture
    async def pyncette_backend(self) -> AsyncIterator[BackendUnderTest]:
        under_test = BackendUnderTest(pyncette.memory.backend, settle_timeout=30)
        try:
            yield under_test
        finally:
            await under_test.aclose()


class _SqliteFile(_BothEventLoops):
    @pytest.fixture
    async def pyncette_backend(self) -> AsyncIterator[BackendUnderTest]:
        # No sqlite_database: the harness gives each namespace its own temporary file.
        under_test = BackendUnderTest(pyncette.sqlite.backend, {})
        try:
            yield under_test
        finally:
            await under_test.aclose()


class TestMemoryRepository(_InMemory, RepositoryContract):
    pass


class TestMemoryBehaviour(_InMemory, BehaviourSuite):
    pass


class TestSqliteFileRepository(_SqliteFile, RepositoryContract):
    async def test_uses_a_file(self, pyncette_backend: BackendUnderTest) -> None:
        options = pyncette_backend.isolated_options()
        assert options["sqlite_database"].endswith(".db")
        assert pyncette_backend.capabilities.persistent
        assert pyncette_backend.capabilities.coordinated


class TestSqliteFileBehaviour(_SqliteFile, BehaviourSuite):
    pass


class TestMemoryIsolation(_InMemory, IsolationSuite):
    pass


class TestSqliteFilePersistence(_SqliteFile, PersistenceSuite):
    pass


class TestSqliteFileIsolation(_SqliteFile, IsolationSuite):
    pass


class TestSqliteFileCoordination(_SqliteFile, CoordinationSuite):
    pass


class TestMemoryValidation(_InMemory, ValidationSuite):
    pass


class TestSqliteFileValidation(_SqliteFile, ValidationSuite):
    pass


class TestMemoryFaults(_InMemory, FaultSuite):
    pass


class TestSqliteFileFaults(_SqliteFile, FaultSuite):
    pass


class TestMemoryPolicies(_InMemory, PolicySuite):
    pass


class TestSqliteFilePolicies(_SqliteFile, PolicySuite):
    pass


class TestMemoryControlContract(_InMemory, ControlContract):
    pass


class TestMemoryControl(_InMemory, ControlSuite):
    pass


class TestSqliteFileControlContract(_SqliteFile, ControlContract):
    pass


class TestSqliteFileControl(_SqliteFile, ControlSuite):
    pass


class TestMemoryNotifications(_InMemory, NotificationSuite):
    """Apps of one process sharing a store (``memory_namespace``) wake each other."""
