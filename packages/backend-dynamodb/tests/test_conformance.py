"""The standard conformance suites, run against DynamoDB (moto, or $DYNAMODB_ENDPOINT)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from pyncette.abc import Repository
from pyncette_conformance import (
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
from pyncette_conformance.harness import BackendUnderTest
from pyncette_dynamodb import backend

#: moto serves one request at a time: the multi-app and recovery tests take minutes on a busy machine.
pytestmark = pytest.mark.timeout(300)


class DynamoDBBackendMixin:
    @pytest.fixture
    async def pyncette_backend(self, dynamodb_endpoint: str) -> AsyncIterator[BackendUnderTest]:
        # moto accepts one connection at a time: with several apps at once, on a busy machine, connections
        # wait in its listen queue for longer than the 5 s default.
        options = {"dynamodb_endpoint": dynamodb_endpoint, "dynamodb_connect_timeout": 60.0}
        under_test = BackendUnderTest(backend, options)
        try:
            yield under_test
        finally:
            await under_test.aclose()


MOTO_QUERY_SCANS = (
    "moto's Query walks every item of the table (moto.dynamodb.models.table.Table.query iterates all_items()), "
    "so on moto a claim slows down with the table; DynamoDB reads only the ready_at index range up to Limit "
    "(the backend's side is checked in test_dynamodb.py::test_claim_queries_only_due_records). "
    "Runs as the standard test when DYNAMODB_ENDPOINT points at another server."
)


class TestDynamoDBRepository(DynamoDBBackendMixin, RepositoryContract):
    @pytest.mark.xfail(reason=MOTO_QUERY_SCANS, strict=False)
    async def test_claim_cost_depends_on_due_records_not_on_all_records(self, repository: Repository) -> None:
        if not os.environ.get("DYNAMODB_ENDPOINT"):
            pytest.xfail(MOTO_QUERY_SCANS)  # at once: storing 20,000 records on moto alone takes minutes
        await super().test_claim_cost_depends_on_due_records_not_on_all_records(repository)


class TestDynamoDBBehaviour(DynamoDBBackendMixin, BehaviourSuite):
    pass


class TestDynamoDBPolicies(DynamoDBBackendMixin, PolicySuite):
    pass


class TestDynamoDBControlContract(DynamoDBBackendMixin, ControlContract):
    # moto serves one request at a time, and a prefix pause costs a write per held record met by a claim
    # (and per record resumed): 300 keep the test under half a minute.
    bulk_records = 300


class TestDynamoDBControl(DynamoDBBackendMixin, ControlSuite):
    pass


class TestDynamoDBPersistence(DynamoDBBackendMixin, PersistenceSuite):
    pass


class TestDynamoDBIsolation(DynamoDBBackendMixin, IsolationSuite):
    pass


class TestDynamoDBCoordination(DynamoDBBackendMixin, CoordinationSuite):
    pass


class TestDynamoDBRecovery(DynamoDBBackendMixin, RecoverySuite):
    """Connections cut by the repository's own kill_connections hook (the suite's default)."""

    recovery_instances = 300  # moto answers slowly; still enough to be cut mid-run


class TestDynamoDBValidation(DynamoDBBackendMixin, ValidationSuite):
    pass


class TestDynamoDBFaults(DynamoDBBackendMixin, FaultSuite):
    fault_instances = 40  # moto answers slowly
