"""``pyncette migrate --from-1x`` on SQLite files written by Pyncette 1.1.0 (see pyncette_conformance.upgrade)."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pyncette import sqlite
from pyncette.abc import backup_table_name, epoch_seconds
from pyncette.errors import ConfigurationError
from pyncette_conformance.upgrade import UpgradeSuite, UpgradeTarget, cleanup, create_legacy_data, migrate_in_process


def _snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]] | None:
    """Every table of the file with its rows (``None`` while there is no file; reading creates none)."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: db.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2').fetchall() for table in tables}


def _target(path: Path, table: str) -> UpgradeTarget:
    options = {"sqlite_database": str(path), "sqlite_table_name": table}

    async def snapshot() -> dict[str, list[tuple[Any, ...]]] | None:
        return _snapshot(path)

    return UpgradeTarget("sqlite", options, snapshot=snapshot)


class TestSqliteMigration(UpgradeSuite):
    @pytest.fixture
    def upgrade_target(self, tmp_path: Path) -> UpgradeTarget:
        return _target(tmp_path / "tasks.db", "legacy_tasks")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    report = await migrate_in_process(_target(path, "pyncette_tasks"))
    assert not report.found
    assert "missing.db" in report.where
    assert not path.exists()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_backup_is_a_renamed_table_of_the_same_rows(tmp_path: Path) -> None:
    target = _target(tmp_path / "tasks.db", "pyncette_tasks")
    expected = await create_legacy_data(target)
    with sqlite3.connect(target.options["sqlite_database"]) as db:
        before = db.execute("SELECT * FROM pyncette_tasks ORDER BY name").fetchall()
    report = await migrate_in_process(target, now=datetime.now(timezone.utc))
    assert report.set_aside and report.failed == 0
    with sqlite3.connect(target.options["sqlite_database"]) as db:
        after = db.execute("SELECT * FROM pyncette_tasks_1x_backup ORDER BY name").fetchall()
        count = db.execute("SELECT count(*) FROM pyncette_tasks").fetchone()[0]
    assert after == before
    assert count == len(expected)
    await cleanup(target)


def test_backup_names_fit_the_identifier_limit() -> None:
    assert backup_table_name("pyncette_tasks") == "pyncette_tasks_1x_backup"
    long = "t" * 63
    assert len(backup_table_name(long)) == 63
    assert backup_table_name(long) != backup_table_name("t" * 62 + "u")
    assert len(backup_table_name("t" * 64, 64)) == 64
    assert sqlite.SqliteLegacyStore is not None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_foreign_table_under_the_backup_name_is_refused(tmp_path: Path) -> None:
    target = _target(tmp_path / "tasks.db", "pyncette_tasks")
    await create_legacy_data(target)
    with sqlite3.connect(target.options["sqlite_database"]) as db:
        db.execute("CREATE TABLE pyncette_tasks_1x_backup (id INTEGER)")
    with pytest.raises(ConfigurationError, match=r"pyncette_tasks_1x_backup.*not a Pyncette 1\.x backup"):
        await migrate_in_process(target)
    with sqlite3.connect(target.options["sqlite_database"]) as db:
        assert db.execute("SELECT count(*) FROM pyncette_tasks").fetchone()[0] > 0  # untouched


def test_epoch_seconds_reads_1x_times_and_ignores_garbage(caplog: pytest.LogCaptureFixture) -> None:
    assert epoch_seconds(None, "execute_after", "job") is None
    assert epoch_seconds(1_700_000_000, "execute_after", "job") == datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc
    )
    assert epoch_seconds(1_700_000_000.25, "execute_after", "job") == datetime(
        2023, 11, 14, 22, 13, 20, 250000, tzinfo=timezone.utc
    )
    assert epoch_seconds("soon", "locked_until", "job:x") is None
    assert "job:x" in caplog.text and "locked_until" in caplog.text
