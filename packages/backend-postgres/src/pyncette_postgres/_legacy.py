"""Pyncette 1.x's table, for ``pyncette migrate --from-1x``.

1.x kept its tasks in one table named by the same ``postgres_table_name`` option (default
``pyncette_tasks``): ``name text PRIMARY KEY, parent_name text, locked_until timestamptz, locked_by uuid,
execute_after timestamptz, task_spec json``. The migration renames it to
:func:`~pyncette.abc.backup_table_name` (one ``ALTER TABLE ... RENAME``, atomic; its indexes keep
their names and go with it), so that the 2.x table can be created under the same name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pyncette.abc import LegacyRow, SqlLegacyStore, backup_table_name, map_exceptions
from pyncette.options import Settings

from ._config import describe_server
from ._repository import DRIVER_ERRORS
from ._schema import quote

_COLUMNS = "name, parent_name, task_spec::text, execute_after, locked_until, locked_by::text"


class PostgresLegacyStore(SqlLegacyStore):
    """The 1.x table behind ``postgres_table_name``, through one connection."""

    def __init__(self, connection: Any, settings: Settings) -> None:
        table = settings["postgres_table_name"]
        url = settings["postgres_url"]
        database = urlsplit(url).path.lstrip("/")
        super().__init__(table, backup_table_name(table), settings.redact(f"{describe_server(url)}/{database}"))
        self._connection = connection

    async def _columns(self, table: str) -> set[str]:
        with map_exceptions(DRIVER_ERRORS, f"postgres inspecting table {table!r}"):
            rows = await self._connection.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                quote(table),
            )
        return {row["attname"] for row in rows}

    async def live_leases(self, now: datetime) -> int:
        with map_exceptions(DRIVER_ERRORS, "postgres counting 1.x leases"):
            count = await self._connection.fetchval(
                f"SELECT count(*) FROM {quote(self._table)} WHERE locked_until > $1", now
            )
        return int(count)

    async def set_aside(self) -> None:
        with map_exceptions(DRIVER_ERRORS, f"postgres renaming table {self._table!r} to {self._backup!r}"):
            await self._connection.execute(f"ALTER TABLE {quote(self._table)} RENAME TO {quote(self._backup)}")

    def rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._pages(self._backup, batch)

    def live_rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._pages(self._table, batch)

    async def _pages(self, name: str, batch: int) -> AsyncIterator[list[LegacyRow]]:
        table = quote(name)
        after: str | None = None
        while True:
            with map_exceptions(DRIVER_ERRORS, f"postgres reading table {name!r}"):
                if after is None:
                    page = await self._connection.fetch(f"SELECT {_COLUMNS} FROM {table} ORDER BY name LIMIT $1", batch)
                else:
                    page = await self._connection.fetch(
                        f"SELECT {_COLUMNS} FROM {table} WHERE name > $1 ORDER BY name LIMIT $2", after, batch
                    )
            if not page:
                return
            yield [_row(row) for row in page]
            if len(page) < batch:
                return
            after = page[-1][0]

    async def drop_backup(self) -> None:
        with map_exceptions(DRIVER_ERRORS, f"postgres dropping table {self._backup!r}"):
            await self._connection.execute(f"DROP TABLE IF EXISTS {quote(self._backup)}")


def _row(row: Any) -> LegacyRow:
    name, parent, spec, execute_after, locked_until, locked_by = row
    return LegacyRow(name, parent, spec, execute_after, locked_until, locked_by if locked_until is not None else None)
