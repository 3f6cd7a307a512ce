"""Pyncette 1.x's table, for ``pyncette migrate --from-1x``.

1.x kept its tasks in one table named by the same ``mysql_table_name`` option (default ``pyncette_tasks``):
``name VARCHAR(256) PRIMARY KEY, parent_name VARCHAR(256), locked_until DOUBLE, locked_by VARCHAR(256),
execute_after DOUBLE, task_spec TEXT``, times in seconds since the epoch. The migration renames it to
:func:`~pyncette.abc.backup_table_name` (one ``RENAME TABLE``, atomic; indexes go with it), so that
the 2.x table can be created under the same name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pyncette.abc import LegacyRow, SqlLegacyStore, backup_table_name, epoch_seconds, map_exceptions
from pyncette.errors import BackendError

from ._repository import ERRORS, Result, run
from ._schema import quote_table

#: MySQL's identifier limit.
MAX_IDENTIFIER = 64
_COLUMNS = "`name`, `parent_name`, `task_spec`, `execute_after`, `locked_until`, `locked_by`"


class MySQLLegacyStore(SqlLegacyStore):
    """The 1.x table behind ``mysql_table_name``, through one autocommit connection."""

    def __init__(self, connection: Any, table: str, where: str, timeout: float) -> None:
        super().__init__(table, backup_table_name(table, MAX_IDENTIFIER), where)
        self._conn = connection
        self._timeout = timeout

    async def _run(self, what: str, *statements: str) -> list[Result]:
        with map_exceptions(ERRORS, f"mysql 1.x migration: {what} on {self._where}"):
            try:
                return await asyncio.wait_for(run(self._conn, *statements), self._timeout)
            except asyncio.TimeoutError:
                raise BackendError(
                    f"mysql 1.x migration: {what} on {self._where} timed out after {self._timeout:g} s"
                ) from None

    async def _columns(self, table: str) -> set[str]:
        (result,) = await self._run(
            f"inspecting table {table!r}",
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {self._conn.escape(table)}",
        )
        return {str(row[0]).lower() for row in result.rows}

    async def live_leases(self, now: datetime) -> int:
        (result,) = await self._run(
            "counting 1.x leases",
            f"SELECT COUNT(*) FROM {quote_table(self._table)} WHERE `locked_until` > {now.timestamp()!r}",
        )
        return int(result.rows[0][0])

    async def set_aside(self) -> None:
        await self._run(
            f"renaming table {self._table!r} to {self._backup!r}",
            f"RENAME TABLE {quote_table(self._table)} TO {quote_table(self._backup)}",
        )

    def rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._pages(self._backup, batch)

    def live_rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._pages(self._table, batch)

    async def _pages(self, table: str, batch: int) -> AsyncIterator[list[LegacyRow]]:
        after = ""
        while True:
            (result,) = await self._run(
                f"reading table {table!r}",
                f"SELECT {_COLUMNS} FROM {quote_table(table)} {after}ORDER BY `name` LIMIT {int(batch)}",
            )
            if not result.rows:
                return
            yield [_row(row) for row in result.rows]
            if len(result.rows) < batch:
                return
            after = f"WHERE `name` > {self._conn.escape(result.rows[-1][0])} "

    async def drop_backup(self) -> None:
        await self._run(f"dropping table {self._backup!r}", f"DROP TABLE IF EXISTS {quote_table(self._backup)}")


def _row(row: tuple[Any, ...]) -> LegacyRow:
    name, parent, spec, execute_after, locked_until, locked_by = row
    until = epoch_seconds(locked_until, "locked_until", name)
    return LegacyRow(
        name,
        parent,
        spec,
        epoch_seconds(execute_after, "execute_after", name),
        until,
        None if until is None else locked_by,
    )
