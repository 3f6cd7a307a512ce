"""The ``redis`` backend descriptor: its options, connecting and purging."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError

from pyncette.abc import Backend, Capabilities, LegacyStore, Repository, map_exceptions
from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Boolean, Identifier, Integer, Option, Options, Seconds, Settings, Url

from ._legacy import RedisLegacyStore
from ._repository import CLIENT_NAME_PREFIX, ERRORS, Client, RedisRepository, namespace_pattern

DEFAULT_URL = "redis://localhost:6379/0"
_PURGE_BATCH = 500
#: The default pool size; the cluster client fails instead of waiting when a node's pool is exhausted: give it room.
_POOL_SIZE, _CLUSTER_POOL_SIZE = 50, 100


class _RedisUrl(Url):
    """A Redis URL whose database (the path of a redis:// or rediss:// URL) is a number."""

    def convert(self, value: object) -> str:
        url: str = super().convert(value)
        parts = urlsplit(url)
        database = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        if database and not database.isdigit():
            raise ValueError(f"the database {database!r} is not a number")
        return url

    def allowed(self) -> str:
        return super().allowed() + ", with a numeric database"


@dataclass(frozen=True)
class RedisSettings:
    """Typed access to validated ``redis_*`` settings."""

    url: str
    namespace: str
    timeout: float
    connect_timeout: float
    pool_size: int
    cluster: bool
    settings: Settings

    @classmethod
    def of(cls, settings: Settings) -> RedisSettings:
        """Read the ``redis_*`` values of ``settings`` (filling in the pool size that depends on the cluster flag)."""
        cluster: bool = settings["redis_cluster"]
        pool_size = settings["redis_pool_size"] or (_CLUSTER_POOL_SIZE if cluster else _POOL_SIZE)
        return cls(
            url=settings["redis_url"],
            namespace=settings["redis_namespace"],
            timeout=settings["redis_timeout"],
            connect_timeout=settings["redis_connect_timeout"],
            pool_size=pool_size,
            cluster=cluster,
            settings=settings,
        )

    @property
    def server(self) -> str:
        """The server as shown in messages: host:port/db or the socket path, never credentials."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        database = parts.path.lstrip("/") or "0"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
        return f"[{host}]:{port}/{database}" if ":" in host else f"{host}:{port}/{database}"

    def redact(self, text: str) -> str:
        """``text`` with every secret (URL password, secret query parameters) masked."""
        return self.settings.redact(text)


def _client(config: RedisSettings, client_name: str) -> Client:
    """A client (no I/O yet); ``ValueError``/``TypeError`` for URL query parameters redis-py refuses."""
    common: dict[str, Any] = {
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.connect_timeout,
        "decode_responses": True,
        # Garbage bytes in a stored record must not fail a whole reply (see _repository.decode).
        "encoding_errors": "replace",
        # No automatic command retries: a script that ran before the connection
        # broke must not run twice. The runtime retries on BackendError instead.
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
    }
    if config.cluster:
        return RedisCluster.from_url(config.url, max_connections=config.pool_size, **common)
    pool = BlockingConnectionPool.from_url(
        config.url, max_connections=config.pool_size, timeout=config.timeout, **common
    )
    return Redis.from_pool(pool)


def _check(settings: Settings) -> None:
    """Refuse URL query parameters the Redis client does not accept, before anything connects."""
    config = RedisSettings.of(settings)
    try:
        client = _client(config, CLIENT_NAME_PREFIX)
        if isinstance(client, Redis):
            # Connections are made lazily: making one (not connecting it) checks the URL's parameters.
            client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, RedisClusterException) as exc:
        cluster = " with redis_cluster" if config.cluster else ""
        raise ConfigurationError(
            config.redact(f"invalid redis_url {config.url!r}{cluster}: the Redis client does not accept it ({exc})")
        ) from None


async def _handshake(client: Client, config: RedisSettings) -> None:
    if isinstance(client, RedisCluster):
        try:
            await client.initialize()
        except RedisClusterException as exc:
            if "not enabled" in str(exc):
                raise ConfigurationError(
                    f"redis_url: {config.server} is not a Redis Cluster node; leave redis_cluster unset"
                ) from exc
            raise
        await client.ping()
        return
    await client.ping()
    # A cluster node answers PING but MOVEs most keys away: refuse it with a clear message.
    with contextlib.suppress(ResponseError):
        if (await client.info("cluster")).get("cluster_enabled") == 1:
            raise ConfigurationError(
                f"redis_url: {config.server} is a Redis Cluster node; set redis_cluster=True for the cluster client"
            )


@contextlib.asynccontextmanager
async def _connected(config: RedisSettings, client_name: str) -> AsyncIterator[Client]:
    client = _client(config, client_name)
    try:
        try:
            # The whole handshake is bounded by the connect timeout: a server that accepts the
            # connection but never answers must not hold start-up for the (longer) command timeout.
            await asyncio.wait_for(_handshake(client, config), config.connect_timeout)
        except (AuthenticationError, ResponseError) as exc:
            raise ConfigurationError(
                config.redact(f"redis_url: {config.server} refused the connection: {exc}")
            ) from exc
        except asyncio.TimeoutError as exc:
            raise BackendError(
                f"cannot connect to Redis at {config.server}: no answer within "
                f"redis_connect_timeout ({config.connect_timeout:g}s)"
            ) from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            message = config.redact(str(exc)) or type(exc).__name__
            raise BackendError(f"cannot connect to Redis at {config.server}: {message}") from exc
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


class RedisBackend(Backend):
    """``redis``: Redis (or a protocol-compatible server) through ``redis.asyncio``."""

    name = "redis"
    capabilities = Capabilities(persistent=True, coordinated=True, asyncio_only=True, notifications=True, control=True)
    options = Options(
        Option(
            "redis_url",
            _RedisUrl("redis", "rediss", "unix"),
            "redis://, rediss:// (TLS) or unix:// URL with credentials and database number",
            default=DEFAULT_URL,
        ),
        Option(
            "redis_namespace",
            Identifier(r"[A-Za-z0-9_]{0,64}", "at most 64 letters, digits or underscores"),
            "key namespace: isolates apps sharing a server",
            default="",
            isolates=True,
        ),
        Option(
            "redis_timeout", Seconds(), "seconds a command (or waiting for a pooled connection) may take", default=10.0
        ),
        Option(
            "redis_connect_timeout", Seconds(), "seconds connecting (and the start-up handshake) may take", default=5.0
        ),
        Option(
            "redis_pool_size",
            Integer(1),
            f"maximum connections kept (default {_POOL_SIZE}; with a cluster {_CLUSTER_POOL_SIZE} per node)",
        ),
        Option("redis_cluster", Boolean(), "use the Redis Cluster client; redis_url names any node", default=False),
        check=_check,
    )

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Repository]:
        config = RedisSettings.of(settings)
        # A name of its own lets the repository find (and kill, in tests) exactly its own connections.
        client_name = f"{CLIENT_NAME_PREFIX}-{uuid.uuid4().hex[:12]}"
        async with _connected(config, client_name) as client:
            repository = RedisRepository(client, config.namespace, client_name)
            with map_exceptions(ERRORS, f"redis at {config.server}: loading scripts"):
                await repository.load_scripts()
            yield repository

    @contextlib.asynccontextmanager
    async def _legacy(self, settings: Settings) -> AsyncIterator[LegacyStore]:
        config = RedisSettings.of(settings)
        if config.cluster:
            raise ConfigurationError(
                "Pyncette 1.x did not run on Redis Cluster, so there is no 1.x data to migrate there: "
                "leave redis_cluster unset and point redis_url at the standalone server 1.x used"
            )
        async with _connected(config, f"{CLIENT_NAME_PREFIX}-migrate") as client:
            assert isinstance(client, Redis)
            yield RedisLegacyStore(client, config.namespace, config.server)

    def legacy(self, settings: Settings) -> contextlib.AbstractAsyncContextManager[LegacyStore]:
        """The 1.x keys of ``redis_namespace`` (see :mod:`pyncette_redis._legacy`)."""
        return self._legacy(settings)

    async def purge(self, settings: Settings) -> None:
        """Delete every key of the namespace (SCAN MATCH + UNLINK): records, pause rules and held sets alike."""
        config = RedisSettings.of(settings)
        async with _connected(config, f"{CLIENT_NAME_PREFIX}-purge") as client:
            with map_exceptions(ERRORS, f"redis purge at {config.server}"):
                batch: list[str] = []
                async for key in client.scan_iter(match=namespace_pattern(config.namespace), count=1000):
                    batch.append(key)
                    if len(batch) >= _PURGE_BATCH:
                        await client.unlink(*batch)
                        batch.clear()
                if batch:
                    await client.unlink(*batch)


backend = RedisBackend()
#: Pyncette 1.x name of the factory.
redis_repository = backend
