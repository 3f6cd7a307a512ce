"""The standard conformance suites, run against PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pyncette_conformance import (
    BackendUnderTest,
    BehaviourSuite,
    ControlContract,
    ControlSuite,
    CoordinationSuite,
    FaultSuite,
    IsolationSuite,
    NotificationSuite,
    PersistenceSuite,
    PolicySuite,
    RecoverySuite,
    RepositoryContract,
    ValidationSuite,
)
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


class TestPostgresPolicies(PostgresBackendMixin, PolicySuite):
    pass


class TestPostgresControlContract(PostgresBackendMixin, ControlContract):
    pass


class TestPostgresControl(PostgresBackendMixin, ControlSuite):
    pass


class TestPostgresPersistence(PostgresBackendMixin, PersistenceSuite):
    pass


class TestPostgresIsolation(PostgresBackendMixin, IsolationSuite):
    pass


class TestPostgresCoordination(PostgresBackendMixin, CoordinationSuite):
    pass


class TestPostgresRecovery(PostgresBackendMixin, RecoverySuite):
    """Connections cut by ``Repository.kill_connections``, which terminates only the app's own."""


class TestPostgresValidation(PostgresBackendMixin, ValidationSuite):
    pass


class TestPostgresFaults(PostgresBackendMixin, FaultSuite):
    pass


class TestPostgresNotifications(PostgresBackendMixin, NotificationSuite):
    """LISTEN/NOTIFY wake-ups; the listening connection is cut by ``Repository.kill_connections`` too."""
