"""The standard conformance suites, run against the MySQL / MariaDB service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyncette_conformance import (
    BackendUnderTest,
    BehaviourSuite,
    ControlContract,
    ControlSuite,
    CoordinationSuite,
    FaultSuite,
    IsolationSuite,
    PersistenceSuite,
    PolicySuite,
    RecoverySuite,
    RepositoryContract,
    ValidationSuite,
)
from pyncette_mysql import backend


class MySQLBackendMixin:
    @pytest.fixture
    async def pyncette_backend(self, mysql_options: dict[str, Any]) -> AsyncIterator[BackendUnderTest]:
        under_test = BackendUnderTest(backend, mysql_options)
        try:
            yield under_test
        finally:
            await under_test.aclose()


class TestMySQLRepository(MySQLBackendMixin, RepositoryContract):
    pass


class TestMySQLBehaviour(MySQLBackendMixin, BehaviourSuite):
    pass


class TestMySQLPolicies(MySQLBackendMixin, PolicySuite):
    pass


class TestMySQLControlContract(MySQLBackendMixin, ControlContract):
    pass


class TestMySQLControl(MySQLBackendMixin, ControlSuite):
    pass


class TestMySQLPersistence(MySQLBackendMixin, PersistenceSuite):
    pass


class TestMySQLIsolation(MySQLBackendMixin, IsolationSuite):
    pass


class TestMySQLCoordination(MySQLBackendMixin, CoordinationSuite):
    pass


class TestMySQLRecovery(MySQLBackendMixin, RecoverySuite):
    """Uses the repository's own kill_connections hook (KILL of the pool's connection ids)."""


class TestMySQLValidation(MySQLBackendMixin, ValidationSuite):
    pass


class TestMySQLFaults(MySQLBackendMixin, FaultSuite):
    pass
