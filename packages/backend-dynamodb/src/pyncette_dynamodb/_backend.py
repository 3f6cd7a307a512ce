"""The ``dynamodb`` backend descriptor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from pyncette.abc import Backend, Capabilities, LegacyStore, Repository, map_exceptions
from pyncette.errors import BackendError
from pyncette.options import Settings

from ._client import DRIVER_ERRORS, Client, connect, credentials_error
from ._legacy import DynamoDBLegacyStore
from ._options import OPTIONS, Config
from ._repository import DynamoDBRepository
from ._table import ensure_table, purge


@contextlib.asynccontextmanager
async def _checked(client: Client, what: str) -> AsyncIterator[None]:
    """Translate driver errors of setup calls, turning missing or refused credentials into a ConfigurationError."""
    try:
        with map_exceptions(DRIVER_ERRORS, f"dynamodb {what} of table {client.config.table_name!r} at {client.server}"):
            yield
    except BackendError as exc:
        problem = credentials_error(exc, client.config)
        if problem is not None:
            raise problem from exc.__cause__
        raise


class DynamoDBBackend(Backend):
    """``dynamodb``: Amazon DynamoDB (or a compatible emulator) through aiobotocore."""

    name = "dynamodb"
    capabilities = Capabilities(persistent=True, coordinated=True, asyncio_only=True, control=True)
    options = OPTIONS

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Repository]:
        async with connect(Config.from_settings(settings)) as client:
            async with _checked(client, "open"):
                await ensure_table(client)
            yield DynamoDBRepository(client)

    @contextlib.asynccontextmanager
    async def _legacy(self, settings: Settings) -> AsyncIterator[LegacyStore]:
        async with connect(Config.from_settings(settings)) as client, _checked(client, "1.x migration"):
            yield DynamoDBLegacyStore(client)

    def legacy(self, settings: Settings) -> contextlib.AbstractAsyncContextManager[LegacyStore]:
        """The 1.x items of the table and partition prefix (see :mod:`pyncette_dynamodb._legacy`)."""
        return self._legacy(settings)

    async def purge(self, settings: Settings) -> None:
        """Delete the items under the partition prefix, then the table itself if it is left empty.

        The table is kept when ``dynamodb_skip_table_create`` is set (it is not Pyncette's to drop).
        """
        async with connect(Config.from_settings(settings)) as client, _checked(client, "purge"):
            await purge(client)


backend = DynamoDBBackend()
