"""``pyncette migrate --from-1x`` on MySQL/MariaDB tables written by Pyncette 1.1.0 (see pyncette_conformance.upgrade).

1.1.0 cannot create its table on MariaDB (its functional index is refused), so, as the benchmarks do, the
table is created for it with 1.1.0's columns and a plain index, and 1.1.0 runs with mysql_skip_table_create.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiomysql
import pytest

from pyncette.abc import backup_table_name
from pyncette.errors import ConfigurationError
from pyncette_conformance.upgrade import UpgradeSuite, UpgradeTarget, cleanup, create_legacy_data, migrate_in_process


def _table() -> str:
    # 1.1.0 accepts lower-case letters and underscores only.
    return "mig_" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:12])


async def _execute(options: dict[str, Any], sql: str) -> list[Any]:
    conn = await aiomysql.connect(
        host=options["mysql_host"],
        port=options["mysql_port"],
        user=options["mysql_user"],
        password=options["mysql_password"],
        db=options["mysql_database"],
        autocommit=True,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        conn.close()


def _target(mysql_options: dict[str, Any]) -> UpgradeTarget:
    table = _table()
    options = {**mysql_options, "mysql_table_name": table}

    async def create_1x_table() -> None:
        await _execute(
            options,
            f"CREATE TABLE {table} (name VARCHAR(256) PRIMARY KEY, parent_name VARCHAR(256), locked_until DOUBLE, "
            "locked_by VARCHAR(256), execute_after DOUBLE, task_spec TEXT, "
            f"INDEX due_{table} (parent_name, execute_after)) DEFAULT CHARSET=utf8mb4",
        )

    async def snapshot() -> dict[str, list[Any] | None]:
        """The rows of the table and of its backup table (``None`` for one that does not exist)."""
        found: dict[str, list[Any] | None] = {}
        for name in (table, backup_table_name(table, 64)):
            exists = await _execute(options, f"SHOW TABLES LIKE '{name}'")
            found[name] = await _execute(options, f"SELECT * FROM {name} ORDER BY 1, 2") if exists else None
        return found

    return UpgradeTarget("mysql", options, {"mysql_skip_table_create": True}, create_1x_table, snapshot=snapshot)


class TestMySQLMigration(UpgradeSuite):
    @pytest.fixture
    def upgrade_target(self, mysql_options: dict[str, Any]) -> UpgradeTarget:
        return _target(mysql_options)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_backup_keeps_the_rows_and_the_2x_table_takes_the_name(mysql_options: dict[str, Any]) -> None:
    target = _target(mysql_options)
    table = target.options["mysql_table_name"]
    try:
        expected = await create_legacy_data(target)
        before = await _execute(target.options, f"SELECT * FROM {table} ORDER BY name")
        with pytest.raises(ConfigurationError, match="--from-1x"):  # 2.x on the 1.x table points at the way out
            async with target.descriptor.open(target.descriptor.settings(target.options)):
                pass
        report = await migrate_in_process(target)
        assert report.set_aside and report.failed == 0
        assert await _execute(target.options, f"SELECT * FROM {table}_1x_backup ORDER BY name") == before
        assert await _execute(target.options, f"SELECT COUNT(*) FROM {table}") == [(len(expected),)]
        columns = await _execute(
            target.options,
            f"SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME = '{table}'",
        )
        assert {"parent", "name", "spec", "scheduled_at"} <= {str(row[0]) for row in columns}
    finally:
        await cleanup(target)
    assert await _execute(target.options, f"SHOW TABLES LIKE '{table}%'") == []
