"""The ``redis`` backend descriptor: option validation, connecting and purging."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError

from pyncette.abc import Backend, Capabilities, Repository, map_exceptions
from pyncette.errors import BackendError, ConfigurationError

from ._repository import ERRORS, RedisRepository, namespace_pattern

DEFAULT_URL = "redis://localhost:6379/0"
_SCHEMES = ("redis", "rediss", "unix")
_NAMESPACE = re.compile(r"[A-Za-z0-9_]{0,64}")
_PURGE_BATCH = 500


@dataclass(frozen=True)
class RedisSettings:
    """Validated options of one repository."""

    url: str
    namespace: str
    timeout: float
    connect_timeout: float
    pool_size: int
    cluster: bool

    @property
    def server(self) -> str:
        """The server as shown in messages: host:port/db or the socket path, never credentials."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        try:
            port = parts.port or 6379
        except ValueError:
            port = 6379
        database = parts.path.lstrip("/") or "0"
        host = parts.hostname or "localhost"
        return f"[{host}]:{port}/{database}" if ":" in host else f"{host}:{port}/{database}"

    @property
    def password(self) -> str | None:
        """The URL's password, so it can be scrubbed from driver messages."""
        password = urlsplit(self.url).password
        return unquote(password) if password else None


def _get(options: Mapping[str, Any], key: str, default: Any) -> Any:
    """The option's value; ``None`` means the default."""
    value = options.get(key)
    return default if value is None else value


def _seconds(options: Mapping[str, Any], key: str, default: float) -> float:
    value = _get(options, key, default)
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{key} must be a positive number of seconds or a timedelta, got {options[key]!r}")
    return float(value)


def _positive_int(options: Mapping[str, Any], key: str, default: int) -> int:
    value = _get(options, key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be a positive integer, got {options[key]!r}")
    return value


def _flag(options: Mapping[str, Any], key: str) -> bool:
    value = _get(options, key, False)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be true or false, got {value!r}")
    return value


def _url(options: Mapping[str, Any]) -> str:
    url = _get(options, "redis_url", DEFAULT_URL)
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"redis_url must be a non-empty string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        # Not echoing the URL: it may carry a password.
        raise ConfigurationError(
            f"redis_url must start with redis://, rediss:// or unix://, got scheme {parts.scheme or '(none)'!r}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ConfigurationError("redis_url has an invalid port") from None
    database = parts.path.lstrip("/") if parts.scheme != "unix" else "0"
    if database and not database.isdigit():
        raise ConfigurationError(f"redis_url database must be a number, got {database!r}")
    return url


def parse_options(options: Mapping[str, Any]) -> RedisSettings:
    """Validate the ``redis_*`` options (already selected) into settings."""
    namespace = _get(options, "redis_namespace", "")
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ConfigurationError(
            f"redis_namespace must be at most 64 letters, digits or underscores, got {namespace!r}"
        )
    cluster = _flag(options, "redis_cluster")
    return RedisSettings(
        url=_url(options),
        namespace=namespace,
        timeout=_seconds(options, "redis_timeout", 10.0),
        connect_timeout=_seconds(options, "redis_connect_timeout", 5.0),
        # The cluster client fails instead of waiting when a node's pool is exhausted: give it room.
        pool_size=_positive_int(options, "redis_pool_size", 100 if cluster else 50),
        cluster=cluster,
    )


Client = Redis | RedisCluster


def _client(settings: RedisSettings) -> Client:
    common: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "decode_responses": True,
        # No automatic command retries: a script that ran before the connection
        # broke must not run twice. The runtime retries on BackendError instead.
        "retry": Retry(NoBackoff(), 0),
        "client_name": "pyncette",
    }
    if settings.cluster:
        return RedisCluster.from_url(settings.url, max_connections=settings.pool_size, **common)
    pool = BlockingConnectionPool.from_url(
        settings.url, max_connections=settings.pool_size, timeout=settings.timeout, **common
    )
    return Redis.from_pool(pool)


async def _handshake(client: Client, settings: RedisSettings) -> None:
    if isinstance(client, RedisCluster):
        try:
            await client.initialize()
        except RedisClusterException as exc:
            if "not enabled" in str(exc):
                raise ConfigurationError(
                    f"redis_url: {settings.server} is not a Redis Cluster node; leave redis_cluster unset"
                ) from exc
            raise
        await client.ping()
        return
    await client.ping()
    # A cluster node answers PING but MOVEs most keys away: refuse it with a clear message.
    with contextlib.suppress(ResponseError):
        if (await client.info("cluster")).get("cluster_enabled") == 1:
            raise ConfigurationError(
                f"redis_url: {settings.server} is a Redis Cluster node; set redis_cluster=True for the cluster client"
            )


@contextlib.asynccontextmanager
async def _connected(settings: RedisSettings) -> AsyncIterator[Client]:
    client = _client(settings)
    try:
        try:
            await asyncio.wait_for(_handshake(client, settings), settings.connect_timeout + settings.timeout)
        except (AuthenticationError, ResponseError) as exc:
            message = _scrub(str(exc), settings)
            raise ConfigurationError(f"redis_url: {settings.server} refused the connection: {message}") from exc
        except (RedisError, RedisClusterException, OSError, asyncio.TimeoutError) as exc:
            message = _scrub(str(exc), settings) or type(exc).__name__
            raise BackendError(f"cannot connect to Redis at {settings.server}: {message}") from exc
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


def _scrub(message: str, settings: RedisSettings) -> str:
    password = settings.password
    return message.replace(password, "***") if password else message


class RedisBackend(Backend):
    """``redis``: Redis (or a protocol-compatible server) through ``redis.asyncio``."""

    name = "redis"
    capabilities = Capabilities(persistent=True, coordinated=True, asyncio_only=True)
    options = {
        "redis_url": f"redis://, rediss:// (TLS) or unix:// URL with credentials and database (default {DEFAULT_URL})",
        "redis_namespace": "isolates apps sharing a server: letters, digits, underscores (default '')",
        "redis_timeout": "seconds a command (or waiting for a pooled connection) may take (default 10)",
        "redis_connect_timeout": "seconds to wait when connecting (default 5)",
        "redis_pool_size": "maximum connections kept by the repository (default 50; per node and 100 with a cluster)",
        "redis_cluster": "use the Redis Cluster client; redis_url names any node (default false)",
    }

    def open(self, options: Mapping[str, Any]) -> AbstractAsyncContextManager[Repository]:
        return self._open(parse_options(self.select_options(options)))

    @contextlib.asynccontextmanager
    async def _open(self, settings: RedisSettings) -> AsyncIterator[Repository]:
        async with _connected(settings) as client:
            repository = RedisRepository(client, settings.namespace)
            with map_exceptions(ERRORS, f"redis at {settings.server}: loading scripts"):
                await repository.load_scripts()
            yield repository

    async def purge(self, options: Mapping[str, Any]) -> None:
        """Delete every key of the namespace (SCAN MATCH + UNLINK)."""
        settings = parse_options(self.select_options(options))
        async with _connected(settings) as client:
            with map_exceptions(ERRORS, "redis purge"):
                batch: list[str] = []
                async for key in client.scan_iter(match=namespace_pattern(settings.namespace), count=1000):
                    batch.append(key)
                    if len(batch) >= _PURGE_BATCH:
                        await client.unlink(*batch)
                        batch.clear()
                if batch:
                    await client.unlink(*batch)


backend = RedisBackend()
#: Pyncette 1.x name of the factory.
redis_repository = backend
