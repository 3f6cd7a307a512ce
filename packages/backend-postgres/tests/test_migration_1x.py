"""``pyncette migrate --from-1x`` on PostgreSQL tables written by Pyncette 1.1.0 (see pyncette_conformance.upgrade)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from pyncette.abc import backup_table_name
from pyncette.errors import ConfigurationError
from pyncette_conformance.upgrade import UpgradeSuite, UpgradeTarget, cleanup, create_legacy_data, migrate_in_process


def _table() -> str:
    # 1.1.0 accepts lower-case letters and underscores only.
    return "mig_" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:12])


def _target(postgres_url: str) -> UpgradeTarget:
    table = _table()

    async def snapshot() -> dict[str, list[tuple[Any, ...]] | None]:
        """The rows of the table and of its backup table (``None`` for one that does not exist)."""
        connection = await asyncpg.connect(postgres_url, timeout=5)
        try:
            found: dict[str, list[tuple[Any, ...]] | None] = {}
            for name in (table, backup_table_name(table)):
                exists = await connection.fetchval("SELECT to_regclass($1)", name) is not None
                rows = await connection.fetch(f"SELECT * FROM {name} ORDER BY 1, 2") if exists else None
                found[name] = None if rows is None else [tuple(row) for row in rows]
            return found
        finally:
            await connection.close()

    return UpgradeTarget("postgres", {"postgres_url": postgres_url, "postgres_table_name": table}, snapshot=snapshot)


class TestPostgresMigration(UpgradeSuite):
    @pytest.fixture
    def upgrade_target(self, postgres_url: str) -> UpgradeTarget:
        return _target(postgres_url)


@pytest.mark.anyio
async def test_the_backup_keeps_the_rows_and_the_2x_table_takes_the_name(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    table = _table()
    target = UpgradeTarget("postgres", {"postgres_url": postgres_url, "postgres_table_name": table})
    try:
        expected = await create_legacy_data(target)
        before = await admin.fetch(f"SELECT * FROM {table} ORDER BY name")
        with pytest.raises(ConfigurationError, match="--from-1x"):  # 2.x on the 1.x table points at the way out
            async with target.descriptor.open(target.descriptor.settings(target.options)):
                pass
        report = await migrate_in_process(target)
        assert report.set_aside and report.failed == 0
        after = await admin.fetch(f"SELECT * FROM {table}_1x_backup ORDER BY name")
        assert [tuple(r) for r in after] == [tuple(r) for r in before]
        assert await admin.fetchval(f"SELECT count(*) FROM {table}") == len(expected)
        columns = {
            r["column_name"]
            for r in await admin.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
            )
        }
        assert {"parent", "name", "spec", "scheduled_at"} <= columns
    finally:
        await cleanup(target)
    assert await admin.fetchval("SELECT to_regclass($1)", f"{table}_1x_backup") is None
