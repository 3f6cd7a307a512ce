"""SQLite: a table created before ``Record.state`` existed gets the column when opened, and keeps its rows."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import pyncette.sqlite
from pyncette.abc import Completion, Record, RegisterMode

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
#: The DDL of the table before the state column (Pyncette 2.0).
OLD_DDL = (
    "CREATE TABLE {t} (parent TEXT NOT NULL, name TEXT NOT NULL, spec TEXT, "
    "scheduled_at INTEGER NOT NULL, locked_until INTEGER, locked_by TEXT, ready_at INTEGER NOT NULL, "
    "PRIMARY KEY (parent, name)) WITHOUT ROWID"
)


async def test_existing_table_gains_the_state_column(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    micros = int(T0.timestamp()) * 1_000_000
    with sqlite3.connect(database) as db:
        db.execute(OLD_DDL.format(t="tasks"))
        db.execute("CREATE INDEX tasks_ready ON tasks (parent, ready_at)")
        db.execute("INSERT INTO tasks VALUES ('p', 'old', '{}', ?, NULL, NULL, ?)", (micros, micros))
    db.close()

    async with pyncette.sqlite.backend(sqlite_database=str(database), sqlite_table_name="tasks") as repo:
        old = await repo.get("p", "old")
        assert old is not None and old.state is None and old.scheduled_at == T0 and old.spec == "{}"
        [claimed] = await repo.claim("p", now=T0, limit=5, lease_until=T0 + timedelta(seconds=30), token="t")
        assert (claimed.name, claimed.state) == ("old", None)
        assert await repo.commit([Completion("p", "old", "t", T0 + timedelta(hours=1), state='{"v": 1}')]) == [True]
        stored = await repo.get("p", "old")
        assert stored is not None and stored.state == '{"v": 1}'

    # Opening again (the column now exists) changes nothing.
    async with pyncette.sqlite.backend(sqlite_database=str(database), sqlite_table_name="tasks") as repo:
        stored = await repo.get("p", "old")
        assert stored is not None and stored.state == '{"v": 1}'
        assert await repo.register([Record("p", "new", None, T0, state='"s"')], now=T0, mode=RegisterMode.CREATE) == [
            True
        ]
    with sqlite3.connect(database) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(tasks)")]
    db.close()
    assert columns.count("state") == 1
