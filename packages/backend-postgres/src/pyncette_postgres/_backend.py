"""The ``postgres`` backend descriptor: option validation, connection pool, table setup and purge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import asyncpg.exceptions

from pyncette.abc import Backend, Capabilities, Repository, map_exceptions
from pyncette.errors import BackendError, ConfigurationError

from ._config import OPTIONS, Settings, parse_settings, redact
from ._repository import DRIVER_ERRORS, PostgresRepository
from ._schema import ensure_table, quote

logger = logging.getLogger(__name__)

#: Server answers that only the user can fix.
_CONFIGURATION_ERRORS = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # unknown user, bad password, pg_hba.conf
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
    asyncpg.exceptions.InsufficientPrivilegeError,  # may not create the table
    asyncpg.exceptions.ClientConfigurationError,  # malformed URL
)


def _scrub(message: str, url: str) -> str:
    password = urlsplit(url).password
    if password:
        for secret in {password, unquote(password)}:
            message = message.replace(secret, "***")
    return message


@contextlib.contextmanager
def _connection_errors(settings: Settings, what: str) -> Iterator[None]:
    """Translate failures to connect or set up into errors naming the server and option, never the password."""
    try:
        yield
    except (BackendError, ConfigurationError):
        raise
    except _CONFIGURATION_ERRORS as exc:
        detail = _scrub(f"{type(exc).__name__}: {exc}", settings.url)
        raise ConfigurationError(
            f"PostgreSQL at {settings.server} refused to {what} (postgres_url={redact(settings.url)}): {detail}"
        ) from exc
    except tuple(DRIVER_ERRORS) as exc:
        detail = _scrub(f"{type(exc).__name__}: {exc}", settings.url)
        raise BackendError(
            f"PostgreSQL at {settings.server}: cannot {what} (postgres_connect_timeout="
            f"{settings.connect_timeout:g}s): {detail}"
        ) from exc


async def _keep_session(connection: Any) -> None:
    """Pool ``reset`` hook that does nothing.

    The repository leaves no session state behind (no SET, LISTEN, cursors or
    session advisory locks; open transactions are still rolled back by
    asyncpg), so the default ``RESET ALL; ...`` round trip on every release is
    pure overhead.
    """


class PostgresBackend(Backend):
    """``postgres``: records in one PostgreSQL table, shared by every instance of the app."""

    name = "postgres"
    capabilities = Capabilities(persistent=True, coordinated=True, asyncio_only=True)
    options = OPTIONS

    def open(self, options: Mapping[str, Any]) -> AbstractAsyncContextManager[Repository]:
        """Validate ``options`` now; connect, create (or check) the table when entered."""
        return self._open(parse_settings(self.select_options(options)))

    @contextlib.asynccontextmanager
    async def _open(self, settings: Settings) -> AsyncIterator[Repository]:
        with _connection_errors(settings, "connect"):
            pool = await asyncpg.create_pool(
                dsn=settings.url,
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                timeout=settings.connect_timeout,
                command_timeout=settings.command_timeout,
                server_settings={"application_name": settings.application_name},
                reset=_keep_session,
            )
        try:
            with _connection_errors(settings, f"set up table {settings.table_name!r}"):
                async with pool.acquire(timeout=settings.connect_timeout) as connection:
                    await ensure_table(connection, settings.table_name, create=not settings.skip_table_create)
            yield PostgresRepository(pool, settings.table_name)
        finally:
            await _close(pool, settings.connect_timeout)

    async def purge(self, options: Mapping[str, Any]) -> None:
        """Drop the table (and its index) the options point at."""
        settings = parse_settings(self.select_options(options))
        with _connection_errors(settings, "connect"):
            connection = await asyncpg.connect(
                dsn=settings.url,
                timeout=settings.connect_timeout,
                command_timeout=settings.command_timeout,
                server_settings={"application_name": settings.application_name},
            )
        try:
            with map_exceptions(DRIVER_ERRORS, "postgres purge"):
                await connection.execute(f"DROP TABLE IF EXISTS {quote(settings.table_name)}")
        finally:
            await _close(connection, settings.connect_timeout)


async def _close(closable: Any, timeout: float) -> None:
    """Close a pool or connection gracefully, or terminate it when that hangs or fails."""
    try:
        await asyncio.wait_for(closable.close(), timeout)
    except asyncio.CancelledError:
        closable.terminate()
        raise
    except Exception as exc:  # closing is best effort: the connections are gone either way
        logger.warning("closing PostgreSQL connections failed (%s: %s); terminated them", type(exc).__name__, exc)
        closable.terminate()


backend = PostgresBackend()
