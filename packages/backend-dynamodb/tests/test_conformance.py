"""The standard conformance suites, run against DynamoDB (moto or $DYNAMODB_ENDPOINT)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pyncette_conformance.harness import BackendUnderTest
from pyncette_conformance.repository import RepositoryContract
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
