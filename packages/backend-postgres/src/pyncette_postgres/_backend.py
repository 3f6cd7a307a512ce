"""The ``postgres`` backend descriptor: connection pool, table setup and purge."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import asyncpg.exceptions

from pyncette.abc import Backend, Capabilities, LegacyStore, Repository, map_exceptions
from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Settings
from pyncette.redaction import get_logger

from ._config import OPTIONS, connect_arguments, describe_server
from ._legacy import PostgresLegacyStore
from ._repository import DRIVER_ERRORS, Connections, PostgresRepository
from ._schema import channel_name, ensure_table, pauses_table_name, quote, table_schema

logger = get_logger(__name__)

#: Answers to connecting that only the user can fix (anything else is transient: the server may be down,
#: starting up, or out of connections).
_CONFIGURATION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28xxx: unknown user, bad password, pg_hba.conf
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: no such database
    asyncpg.exceptions.SyntaxOrAccessError,  # 42xxx: no privilege, unknown setting in the URL's parameters
    asyncpg.exceptions.DataError,  # 22xxx: a setting's value refused
    asyncpg.exceptions.ClientConfigurationError,  # a URL parameter asyncpg refuses
    ValueError,  # asyncpg cannot parse the URL
    TypeError,
    OverflowError,  # a port out of range
)


@contextlib.contextmanager
def _connection_errors(settings: Settings, what: str) -> Iterator[None]:
    """Translate failures to connect or set up into errors naming the server and option, never a secret.

    The driver's exception is summarized (redacted) in the message and not chained: its text or
    arguments could hold the URL.
    """
    try:
        yield
    except (BackendError, ConfigurationError):
        raise
    except _CONFIGURATION_ERRORS as exc:
        detail = settings.redact(f"{type(exc).__name__}: {exc}")
        raise ConfigurationError(
            f"PostgreSQL at {_server(settings)} refused to {what} (check postgres_url and the server): {detail}"
        ) from None
    except tuple(DRIVER_ERRORS) as exc:
        detail = settings.redact(f"{type(exc).__name__}: {exc}")
        raise BackendError(
            f"PostgreSQL at {_server(settings)}: cannot {what} "
            f"(postgres_connect_timeout={settings['postgres_connect_timeout']:g}s): {detail}"
        ) from None


def _server(settings: Settings) -> str:
    return settings.redact(describe_server(settings["postgres_url"]))


async def _keep_session(connection: Any) -> None:
    """Pool ``reset`` hook that does nothing.

    The repository leaves no session state behind (no SET, LISTEN, cursors or
    session advisory locks: wake-ups LISTEN on a connection of their own; open
    transactions are still rolled back by asyncpg), so the default ``RESET ALL; ...`` round trip on every release is
    pure overhead.
    """


class PostgresBackend(Backend):
    """``postgres``: records and pause rules in two PostgreSQL tables, shared by every instance of the app;
    wake-ups by LISTEN/NOTIFY on a channel of the records table."""

    name = "postgres"
    capabilities = Capabilities(persistent=True, coordinated=True, asyncio_only=True, notifications=True, control=True)
    options = OPTIONS

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Repository]:
        """Connect, create (or check) the table, and yield the repository."""
        table = settings["postgres_table_name"]
        timeout = settings["postgres_connect_timeout"]
        connections = Connections(settings)
        # asyncpg's own floor (its min_size) is restored by a background task that logs a traceback for
        # every failed attempt while the server is down. The pool instead opens no connection by itself
        # and closes none for being idle: the floor is opened here, and a connection the server closed
        # is replaced by the next call that needs one.
        with _connection_errors(settings, "connect"):
            pool = await asyncpg.create_pool(
                min_size=0,
                max_size=settings["postgres_pool_max_size"],
                max_inactive_connection_lifetime=0,
                reset=_keep_session,
                init=connections.opened,
                **connect_arguments(settings),
            )
        try:
            with _connection_errors(settings, "connect"):
                # At least one: the table check below needs it, and a refused login should read as such.
                await _warm_up(pool, max(1, settings["postgres_pool_min_size"]), timeout)
            with _connection_errors(settings, f"set up table {table!r}"):
                async with pool.acquire(timeout=timeout) as connection:
                    await ensure_table(connection, table, create=not settings["postgres_skip_table_create"])
                    channel = channel_name(await table_schema(connection, table), table)
            yield PostgresRepository(pool, table, connections, channel)
        finally:
            await _close(pool, timeout, settings)

    @contextlib.asynccontextmanager
    async def legacy(self, settings: Settings) -> AsyncIterator[LegacyStore]:
        """The Pyncette 1.x table of the same name (see :mod:`pyncette_postgres._legacy`); creates nothing."""
        with _connection_errors(settings, "connect"):
            connection = await asyncpg.connect(**connect_arguments(settings))
        try:
            yield PostgresLegacyStore(connection, settings)
        finally:
            await _close(connection, settings["postgres_connect_timeout"], settings)

    async def purge(self, settings: Settings) -> None:
        """Drop the tables (records and pause rules, with their indexes) the settings point at."""
        table = settings["postgres_table_name"]
        with _connection_errors(settings, "connect"):
            connection = await asyncpg.connect(**connect_arguments(settings))
        try:
            with map_exceptions(DRIVER_ERRORS, "postgres purge"):
                await connection.execute(f"DROP TABLE IF EXISTS {quote(table)}, {quote(pauses_table_name(table))}")
        finally:
            await _close(connection, settings["postgres_connect_timeout"], settings)


async def _warm_up(pool: Any, count: int, timeout: float) -> None:
    """Open ``count`` connections now (they stay open), so the first calls do not wait for them."""
    results = await asyncio.gather(*(pool.acquire(timeout=timeout) for _ in range(count)), return_exceptions=True)
    for result in results:
        if not isinstance(result, BaseException):
            await pool.release(result)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _close(closable: Any, timeout: float, settings: Settings) -> None:
    """Close a pool or connection gracefully, or terminate it when that hangs or fails."""
    try:
        await asyncio.wait_for(closable.close(), timeout)
    except asyncio.CancelledError:
        closable.terminate()
        raise
    except Exception as exc:  # closing is best effort: the connections are gone either way
        logger.warning(
            "closing PostgreSQL connections failed (%s); terminated them",
            settings.redact(f"{type(exc).__name__}: {exc}"),
        )
        closable.terminate()


backend = PostgresBackend()
