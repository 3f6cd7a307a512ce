"""The standard conformance suites, run against DynamoDB (moto, or $DYNAMODB_ENDPOINT)."""

from __future__ import annotations

from collections.abc import AsyncIterator
import pytest

from pyncette import PyncetteContext
from pyncette_conformance import (
    BehaviourSuite,
    CoordinationSuite,
    IsolationSuite,
    PersistenceSuite,
    RepositoryContract,
)
from pyncette_conformance.harness import BackendUnderTest
from pyncette_conformance.recovery import KillConnections, RecoverySuite
from pyncette_dynamodb import backend


class DynamoDBBackendMixin:
    @pytest.fixture
    async def pyncette_backend(self, dynamodb_endpoint: str) -> AsyncIterator[BackendUnderTest]:
        under_test = BackendUnderTest(backend, {"dynamodb_endpoint": dynamodb_endpoint})
        try:
            yield under_test
        finally:
            await under_test.aclose()


class TestDynamoDBRepository(DynamoDBBackendMixin, RepositoryContract):
    pass


class TestDynamoDBBehaviour(DynamoDBBackendMixin, BehaviourSuite):
    pass


class TestDynamoDBPersistence(DynamoDBBackendMixin, PersistenceSuite):
    pass


class TestDynamoDBIsolation(DynamoDBBackendMixin, IsolationSuite):
    pass


class TestDynamoDBCoordination(DynamoDBBackendMixin, CoordinationSuite):
    pass


class TestDynamoDBRecovery(DynamoDBBackendMixin, RecoverySuite):
    recovery_instances = 300  # moto answers slowly; still enough to be cut mid-run

    @pytest.fixture
    def kill_connections(self) -> KillConnections:
        # The repository's own hook: aborts the app's HTTP connections, in flight or pooled.
        async def kill(ctx: PyncetteContext) -> int:
            return await ctx.repository.kill_connections()

        return kill
