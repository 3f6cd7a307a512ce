"""The standard conformance suites, run against PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pyncette import PyncetteContext
from pyncette_conformance import (
    BackendUnderTest,
    BehaviourSuite,
    CoordinationSuite,
    IsolationSuite,
    PersistenceSuite,
    RepositoryContract,
)
from pyncette_conformance.recovery import KillConnections, RecoverySuite
from pyncette_postgres import backend


class PostgresBackendMixin:
    @pytest.fixture
    async def pyncette_backend(self, postgres_url: str) -> AsyncIterator[BackendUnderTest]:
        under_test = BackendUnderTest(backend, {"postgres_url": postgres_url})
        try:
            yield under_test
        finally:
            await under_test.aclose()


class TestPostgresRepository(PostgresBackendMixin, RepositoryContract):
    pass


class TestPostgresBehaviour(PostgresBackendMixin, BehaviourSuite):
    pass


class TestPostgresPersistence(PostgresBackendMixin, PersistenceSuite):
    pass


class TestPostgresIsolation(PostgresBackendMixin, IsolationSuite):
    pass


class TestPostgresCoordination(PostgresBackendMixin, CoordinationSuite):
    pass


class TestPostgresRecovery(PostgresBackendMixin, RecoverySuite):
    @pytest.fixture
    def recovery_options(self) -> dict[str, Any]:
        # Other tests share the server: name this app's connections so only they are terminated.
        return {"postgres_application_name": "pyncette-recovery-" + uuid.uuid4().hex[:8]}

    @pytest.fixture
    def kill_connections(self, admin: asyncpg.Connection, recovery_options: dict[str, Any]) -> KillConnections:
        async def kill(ctx: PyncetteContext) -> int:
            killed: int = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                recovery_options["postgres_application_name"],
            )
            return killed

        return kill
