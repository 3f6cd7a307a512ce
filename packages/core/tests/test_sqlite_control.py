"""SQLite: pause rules. Upgrading a table of the earlier 2.x layout, the query plans that keep claims cheap with
held records, text that is plain in every encoding, and the control contract on ``:memory:``."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import pyncette.sqlite
from pyncette.abc import Completion, PauseRule, Record, RegisterMode
from pyncette.errors import ConfigurationError
from pyncette.sqlite import SqliteRepository
from pyncette_conformance import BackendUnderTest, ControlContract

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)
#: The DDL of the table before pause rules (Pyncette 2.x with ``state``), and its claim index.
OLD_DDL = (
    "CREATE TABLE {t} (parent TEXT NOT NULL, name TEXT NOT NULL, spec TEXT, "
    "scheduled_at INTEGER NOT NULL, locked_until INTEGER, locked_by TEXT, ready_at INTEGER NOT NULL, "
    "state TEXT, PRIMARY KEY (parent, name)) WITHOUT ROWID"
)
OLD_INDEX = "CREATE INDEX {t}_ready ON {t} (parent, ready_at)"
#: The claim index of the layout with pause rules up to 2026-12-01 (the ``paused`` flag inside a full index).
FLAGGED_INDEX = "CREATE INDEX {t}_ready ON {t} (parent, paused, ready_at)"


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


@contextlib.asynccontextmanager
async def _open(database: Path) -> AsyncIterator[SqliteRepository]:
    async with pyncette.sqlite.backend(sqlite_database=str(database), sqlite_table_name="tasks") as repo:
        assert isinstance(repo, SqliteRepository)
        yield repo


async def _claim(repo: SqliteRepository, parent: str = "p", now: datetime = T0, token: str = "t") -> list[str]:
    claimed = await repo.claim(parent, now=now, limit=1000, lease_until=now + LEASE, token=token)
    return sorted(r.name for r in claimed)


async def test_a_table_of_the_earlier_layout_is_upgraded(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    at, until = _micros(T0), _micros(T0 + LEASE)
    with sqlite3.connect(database) as db:
        db.execute(OLD_DDL.format(t="tasks"))
        db.execute(OLD_INDEX.format(t="tasks"))
        db.executemany(
            "INSERT INTO tasks VALUES ('p', ?, ?, ?, ?, ?, ?, ?)",
            [
                ("a1", '{"v": 1}', at, None, None, at, '{"s": 1}'),
                ("a2", None, at, until, "old", until, None),  # leased by a process of the earlier version
                ("b", None, at, None, None, at, None),
            ],
        )
    db.close()

    async with _open(database) as repo:
        a1 = await repo.get("p", "a1")
        assert a1 == Record("p", "a1", '{"v": 1}', T0, state='{"s": 1}')
        a2 = await repo.get("p", "a2")
        assert a2 is not None and (a2.locked_until, a2.locked_by) == (T0 + LEASE, "old")
        assert await repo.pause(PauseRule("p", "a", True, '{"note": "n"}'), now=T0) == 2
        assert await repo.register([Record("p", "a3", None, T0)], now=T0, mode=RegisterMode.CREATE) == [True]
        assert await _claim(repo) == ["b"]
        # The lease taken before the upgrade still commits; the record stays held.
        assert await repo.commit([Completion("p", "a2", "old", T0)]) == [True]
        assert await _claim(repo, now=T0 + LEASE, token="t2") == ["b"]  # its lease expired

    # Opening again keeps the rule, the flags and the data.
    async with _open(database) as repo:
        assert await repo.pauses("p") == [PauseRule("p", "a", True, '{"note": "n"}')]
        assert await _claim(repo, now=T0 + 3 * LEASE, token="t3") == ["b"]
        assert await repo.resume("p", "a", prefix=True, now=T0) is True
        assert await _claim(repo, now=T0 + 3 * LEASE, token="t3") == ["a1", "a2", "a3"]

    with sqlite3.connect(database) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(tasks)")]
    db.close()
    assert columns.count("paused") == 1 and columns.count("state") == 1
    _assert_current_indexes(database)


def _assert_current_indexes(database: Path) -> None:
    with sqlite3.connect(database) as db:
        ready = [row[2] for row in db.execute("PRAGMA index_info(tasks_ready)")]
        held = [row[2] for row in db.execute("PRAGMA index_info(tasks_held)")]
        partial = dict(db.execute("SELECT name, partial FROM pragma_index_list('tasks') WHERE origin = 'c'").fetchall())
        indexes = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'tasks'")]
    db.close()
    assert (ready, held) == (["parent", "ready_at"], ["parent", "name"])
    assert partial == {"tasks_ready": 1, "tasks_held": 1}
    assert sorted(indexes) == ["tasks", "tasks_held", "tasks_ready"]


async def test_a_table_with_the_flag_in_its_claim_index_is_upgraded(tmp_path: Path) -> None:
    database = tmp_path / "flagged.db"
    at = _micros(T0)
    async with _open(database) as repo:  # today's layout, then its claim index as it was until 2026-12-01
        assert all(
            await repo.register([Record("p", n, None, T0) for n in ["a1", "a2", "b"]], now=T0, mode=RegisterMode.CREATE)
        )
        assert await repo.pause(PauseRule("p", "a", True), now=T0) == 2
    with sqlite3.connect(database) as db:
        db.execute("DROP INDEX tasks_ready")
        db.execute("DROP INDEX tasks_held")
        db.execute(FLAGGED_INDEX.format(t="tasks"))
        db.execute(
            "INSERT INTO tasks (parent, name, scheduled_at, ready_at, paused) VALUES ('p', 'c', ?, ?, 0)", (at, at)
        )
    db.close()

    async with _open(database) as repo:
        assert await _claim(repo) == ["b", "c"]  # the held records stay held
        assert await repo.resume("p", "a", prefix=True, now=T0) is True
        assert await _claim(repo, now=T0 + LEASE, token="t2") == ["a1", "a2", "b", "c"]
    _assert_current_indexes(database)


async def test_claims_never_read_held_records(tmp_path: Path) -> None:
    async with _open(tmp_path / "plan.db") as repo:
        records = [Record("p", f"r{n:03d}", None, T0) for n in range(300)]
        assert all(await repo.register(records, now=T0, mode=RegisterMode.CREATE))
        assert await repo.pause(PauseRule("p", "r0", True), now=T0) == 100
        statements: list[str] = []
        repo._db.set_trace_callback(statements.append)
        try:
            assert len(await _claim(repo)) == 200
            await repo.register([Record("p", "r099x", None, T0)], now=T0, mode=RegisterMode.CREATE)
            await repo.pause(PauseRule("p", "r1", True), now=T0)
            await repo.resume("p", "r1", prefix=True, now=T0)
            await repo.pause(PauseRule("p", "", True), now=T0)
            await repo.resume("p", "", prefix=True, now=T0)
        finally:
            repo._db.set_trace_callback(None)

        def plan(start: str, which: int = 0) -> str:
            sql = [s for s in statements if s.startswith(start)][which]
            return " / ".join(str(row[3]) for row in repo._db.execute(f"EXPLAIN QUERY PLAN {sql}"))

        # The claim reads the range of a partial index of the claimable records only: held ones are not in it.
        assert plan("SELECT").startswith("SEARCH tasks USING INDEX tasks_ready (parent=? AND ready_at<?)")
        # Registering looks the rules up by primary key; pausing a prefix reads its key range.
        assert "SEARCH r USING PRIMARY KEY (parent=? AND match<?)" in plan("INSERT INTO tasks (")
        assert plan("UPDATE tasks SET paused = 1").startswith(
            "SEARCH tasks USING PRIMARY KEY (parent=? AND name>? AND name<?)"
        )
        # Resuming reads the held records only (of the prefix, or of the whole task).
        resume = "UPDATE tasks INDEXED BY tasks_held"
        assert plan(resume, 0).startswith("SEARCH tasks USING INDEX tasks_held (parent=? AND name>? AND name<?)")
        assert plan(resume, 1).startswith("SEARCH tasks USING INDEX tasks_held (parent=?)")


@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16le"])
async def test_prefixes_are_plain_text_in_any_encoding(tmp_path: Path, encoding: str) -> None:
    database = tmp_path / "text.db"
    with sqlite3.connect(database) as db:
        db.execute(f"PRAGMA encoding = '{encoding}'")
        db.execute("CREATE TABLE placeholder (x)")
    db.close()
    top = "\U0010ffff"
    held = ["a\x00b", "a\x00", f"x{top}", f"x{top}{top}y", "\ud7ff", "\ud7ffz", "é", "éa"]
    free = ["a", "a\x01", "x", "y", "\ue000", "e", "f"]
    async with _open(database) as repo:
        assert all(
            await repo.register([Record("p", n, None, T0) for n in held + free], now=T0, mode=RegisterMode.CREATE)
        )
        for prefix in ["a\x00", f"x{top}", "\ud7ff", "é"]:
            await repo.pause(PauseRule("p", prefix, True), now=T0)
        assert await _claim(repo) == sorted(free)
        assert await repo.register([Record("p", "éb", None, T0)], now=T0, mode=RegisterMode.CREATE) == [True]
        assert await _claim(repo, now=T0 + LEASE) == sorted(free)
        for prefix in ["a\x00", f"x{top}", "\ud7ff", "é"]:
            assert await repo.resume("p", prefix, prefix=True, now=T0)
        assert await _claim(repo, now=T0 + LEASE, token="t2") == sorted([*held, "éb"])


async def test_a_foreign_table_in_the_place_of_the_rules_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "clash.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE tasks_pauses (id INTEGER PRIMARY KEY, other TEXT)")
    db.close()
    with pytest.raises(ConfigurationError, match="tasks_pauses"):
        async with _open(database):
            pass


async def test_purge_drops_the_rules_too(tmp_path: Path) -> None:
    database = tmp_path / "purge.db"
    async with _open(database) as repo:
        await repo.pause(PauseRule("p", "", True), now=T0)
    await pyncette.sqlite.backend.purge(
        pyncette.sqlite.backend.settings({"sqlite_database": str(database), "sqlite_table_name": "tasks"})
    )
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    db.close()
    assert tables == []


class TestSqliteMemoryControlContract(ControlContract):
    """The control contract on a ``:memory:`` database."""

    @pytest.fixture
    async def pyncette_backend(self) -> AsyncIterator[BackendUnderTest]:
        under_test = BackendUnderTest(pyncette.sqlite.backend, {"sqlite_database": ":memory:"})
        try:
            assert under_test.capabilities.control and not under_test.capabilities.persistent
            yield under_test
        finally:
            await under_test.aclose()
