"""Redis storage backend for Pyncette: ``Pyncette(redis_url="redis://localhost")`` or ``backend="redis"``."""

from __future__ import annotations

from ._backend import RedisBackend, backend, redis_repository
from ._repository import RedisRepository

__all__ = ["RedisBackend", "RedisRepository", "backend", "redis_repository"]
