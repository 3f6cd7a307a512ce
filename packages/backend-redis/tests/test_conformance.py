"""The standard conformance suites, run against the Redis service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pyncette_conformance.behaviour import BehaviourSuite
from pyncette_conformance.control import ControlContract, ControlSuite
from pyncette_conformance.coordination import CoordinationSuite, IsolationSuite, PersistenceSuite
from pyncette_conformance.faults import FaultSuite
from pyncette_conformance.harness import BackendUnderTest
from pyncette_conformance.notifications import NotificationSuite
from pyncette_conformance.policies import PolicySuite
from pyncette_conformance.recovery import RecoverySuite
from pyncette_conformance.repository import RepositoryContract
from pyncette_conformance.validation import ValidationSuite
from pyncette_redis import backend


class RedisBackendMixin:
    @pytest.fixture
    async def pyncette_backend(self, redis_url: str) -> AsyncIterator[BackendUnderTest]:
        under_test = BackendUnderTest(backend, {"redis_url": redis_url})
        try:
            yield under_test
        finally:
            await under_test.aclose()


class TestRedisRepository(RedisBackendMixin, RepositoryContract):
    pass


class TestRedisBehaviour(RedisBackendMixin, BehaviourSuite):
    pass


class TestRedisPolicies(RedisBackendMixin, PolicySuite):
    pass


class TestRedisControl(RedisBackendMixin, ControlContract):
    pass


class TestRedisControlSuite(RedisBackendMixin, ControlSuite):
    pass


class RedisClusterMixin:
    @pytest.fixture
    async def pyncette_backend(self, cluster_url: str) -> AsyncIterator[BackendUnderTest]:
        under_test = BackendUnderTest(backend, {"redis_url": cluster_url, "redis_cluster": True})
        try:
            yield under_test
        finally:
            await under_test.aclose()


class TestRedisClusterRepository(RedisClusterMixin, RepositoryContract):
    pass


class TestRedisClusterBehaviour(RedisClusterMixin, BehaviourSuite):
    pass


class TestRedisClusterControl(RedisClusterMixin, ControlContract):
    pass


class TestRedisClusterControlSuite(RedisClusterMixin, ControlSuite):
    pass


class TestRedisPersistence(RedisBackendMixin, PersistenceSuite):
    pass


class TestRedisIsolation(RedisBackendMixin, IsolationSuite):
    pass


class TestRedisCoordination(RedisBackendMixin, CoordinationSuite):
    pass


class TestRedisRecovery(RedisBackendMixin, RecoverySuite):
    """Cuts only the app's own connections (``RedisRepository.kill_connections``: ``CLIENT KILL ID``)."""


class TestRedisClusterRecovery(RedisClusterMixin, RecoverySuite):
    pass


class TestRedisValidation(RedisBackendMixin, ValidationSuite):
    pass


class TestRedisClusterValidation(RedisClusterMixin, ValidationSuite):
    pass


class TestRedisFaults(RedisBackendMixin, FaultSuite):
    pass


class TestRedisNotifications(RedisBackendMixin, NotificationSuite):
    """Wake-ups over pub/sub; the lost-connection test cuts the subscriber too (``kill_connections``)."""


class TestRedisClusterNotifications(RedisClusterMixin, NotificationSuite):
    pass
