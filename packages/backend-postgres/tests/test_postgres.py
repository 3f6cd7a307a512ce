"""PostgreSQL-specific behaviour: the descriptor, connecting, table layout, recovery, batch edge cases.

Options and secrets are in test_postgres_options.py, corrupt records in test_postgres_corrupt.py, and
killed connections and server restarts in test_postgres_recovery.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import asyncpg
import pytest

from pyncette import backends
from pyncette.abc import Completion, Lease, PauseRule, Record, RegisterMode, Repository
from pyncette.errors import BackendError, ConfigurationError
from pyncette_postgres import PostgresBackend, PostgresRepository, backend, postgres_repository
from pyncette_postgres._repository import Connections, parse_hint
from pyncette_postgres._schema import (
    channel_name,
    ddl,
    index_name,
    legacy_index_name,
    pauses_table_name,
    upgrade_ddl,
)

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def unique_table() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def open_repository(**options: Any) -> AbstractAsyncContextManager[Repository]:
    return backend.open(backend.settings(options))


async def purge(**options: Any) -> None:
    await backend.purge(backend.settings(options))


@pytest.fixture
async def table(postgres_url: str) -> AsyncIterator[str]:
    """A fresh table name, dropped after the test."""
    name = unique_table()
    yield name
    await purge(postgres_url=postgres_url, postgres_table_name=name)


@pytest.fixture
async def repository(postgres_url: str, table: str) -> AsyncIterator[Repository]:
    async with open_repository(postgres_url=postgres_url, postgres_table_name=table) as repo:
        yield repo


def rec(name: str, at: datetime = T0, spec: str | None = "{}", parent: str = "p") -> Record:
    return Record(parent=parent, name=name, spec=spec, scheduled_at=at)


# --- the descriptor ------------------------------------------------------------------------------


def test_descriptor_and_entry_point() -> None:
    assert backends.load("postgres") is backend
    assert postgres_repository is backend
    assert isinstance(backend, PostgresBackend)
    assert backend.name == "postgres"
    caps = backend.capabilities
    assert (caps.persistent, caps.coordinated, caps.asyncio_only, caps.notifications) == (True, True, True, True)
    assert caps.control


def test_derived_names_fit_postgres_identifier_limit() -> None:
    assert index_name("pyncette_tasks") == "pyncette_tasks_claim"
    assert legacy_index_name("pyncette_tasks") == "pyncette_tasks_due"
    assert pauses_table_name("pyncette_tasks") == "pyncette_tasks_pauses"
    long_a, long_b = "a" * 62 + "b", "a" * 62 + "c"
    for derive in (index_name, legacy_index_name, pauses_table_name):
        assert len(derive(long_a)) == 63
        assert derive(long_a) != derive(long_b)
    # The name earlier versions gave the due-work index of a long table name, so that it is found and dropped.
    assert legacy_index_name(long_a) == long_a[:50] + "_" + hashlib.sha256(long_a.encode()).hexdigest()[:8] + "_due"


def test_importing_and_validating_do_not_connect() -> None:
    # open() returns an unentered context manager: nothing to connect to yet.
    backend.open(backend.settings({"postgres_url": "postgres://u@127.0.0.1:1/db"}))


# --- connecting (failures and secrets: test_postgres_options.py) ------------------------------------


async def test_purge_of_unreachable_server_raises_backend_error() -> None:
    with pytest.raises(BackendError):
        await purge(postgres_url="postgres://u@127.0.0.1:1/db", postgres_connect_timeout=1)


async def test_application_name_and_pool_size(postgres_url: str, table: str, admin: asyncpg.Connection) -> None:
    app = "pyncette-test-" + uuid.uuid4().hex[:8]
    options = {
        "postgres_url": postgres_url,
        "postgres_table_name": table,
        "postgres_application_name": app,
        "postgres_pool_min_size": 3,
        "postgres_pool_max_size": 5,
    }
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    async with open_repository(**options) as repo:
        assert await admin.fetchval(query, app) == 3
        # Concurrent calls use more connections, up to the maximum.
        await asyncio.gather(*(repo.get("p", str(i)) for i in range(20)))
        assert 3 <= await admin.fetchval(query, app) <= 5
    await asyncio.sleep(0.1)
    assert await admin.fetchval(query, app) == 0


async def test_default_application_name_is_pyncette(repository: Repository, admin: asyncpg.Connection) -> None:
    assert await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pyncette'") >= 1


# --- the table -----------------------------------------------------------------------------------


async def test_table_layout(repository: Repository, table: str, admin: asyncpg.Connection) -> None:
    assert isinstance(repository, PostgresRepository)
    columns = await admin.fetch(
        "SELECT column_name, data_type, is_nullable, collation_name FROM information_schema.columns"
        " WHERE table_name = $1 ORDER BY ordinal_position",
        table,
    )
    assert [tuple(c) for c in columns] == [
        ("parent", "text", "NO", "C"),
        ("name", "text", "NO", "C"),
        ("spec", "text", "YES", None),
        ("scheduled_at", "timestamp with time zone", "NO", None),
        ("locked_until", "timestamp with time zone", "YES", None),
        ("locked_by", "text", "YES", None),
        ("state", "text", "YES", None),
        ("paused", "boolean", "NO", None),
    ]
    indexes = {
        row["indexname"]: row["indexdef"]
        for row in await admin.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", table)
    }
    assert indexes.keys() == {f"{table}_pkey", f"{table}_claim"}
    assert indexes[f"{table}_pkey"].endswith("USING btree (parent, name)")
    assert indexes[f"{table}_claim"].endswith(
        "USING btree (parent, GREATEST(scheduled_at, locked_until)) WHERE (NOT paused)"
    )
    rules = await admin.fetch(
        "SELECT column_name, data_type, is_nullable, collation_name FROM information_schema.columns"
        " WHERE table_name = $1 ORDER BY ordinal_position",
        f"{table}_pauses",
    )
    assert [tuple(c) for c in rules] == [
        ("parent", "text", "NO", "C"),
        ("match", "text", "NO", "C"),
        ("prefix", "boolean", "NO", None),
        ("info", "text", "YES", None),
    ]
    key = await admin.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1", f"{table}_pauses_pkey")
    assert key.endswith("USING btree (parent, match, prefix)")


async def test_readme_ddl_matches_the_code() -> None:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert ddl("pyncette_tasks").strip() in readme


async def test_opening_twice_is_idempotent(postgres_url: str, table: str) -> None:
    options = {"postgres_url": postgres_url, "postgres_table_name": table}
    async with open_repository(**options) as first:
        await first.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    async with open_repository(**options) as second:
        assert await second.get("p", "a") is not None


async def test_concurrent_startup_creates_the_table_once(postgres_url: str, table: str) -> None:
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_pool_min_size": 1}

    async def start(i: int) -> bool:
        async with open_repository(**options) as repo:
            return (await repo.register([rec(f"r{i}")], now=T0, mode=RegisterMode.CREATE)) == [True]

    assert await asyncio.gather(*(start(i) for i in range(10))) == [True] * 10


async def test_skip_table_create_with_missing_table(postgres_url: str, table: str, admin: asyncpg.Connection) -> None:
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_skip_table_create": True}
    with pytest.raises(ConfigurationError) as info:
        async with open_repository(**options):
            pass
    message = str(info.value)
    assert table in message
    assert "postgres_skip_table_create" in message
    assert await admin.fetchval("SELECT to_regclass($1)", table) is None


async def test_skip_table_create_uses_a_table_made_from_the_readme_ddl(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    await admin.execute(ddl(table))
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_skip_table_create": True}
    async with open_repository(**options) as repo:
        assert await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]
        assert [r.name for r in await repo.claim("p", now=T0, limit=5, lease_until=T0, token="t")] == ["a"]


async def test_incompatible_existing_table_is_reported(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    # A table of the same name but another layout (e.g. left over from Pyncette 1.x).
    await admin.execute(f'CREATE TABLE "{table}" (name text PRIMARY KEY, parent_name text, task_spec text)')
    with pytest.raises(ConfigurationError) as info:
        async with open_repository(postgres_url=postgres_url, postgres_table_name=table):
            pass
    assert "scheduled_at" in str(info.value)
    assert table in str(info.value)


async def test_purge_drops_the_table(postgres_url: str, admin: asyncpg.Connection) -> None:
    name = unique_table()
    options = {"postgres_url": postgres_url, "postgres_table_name": name}
    async with open_repository(**options):
        assert await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
        assert await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{name}_pauses")
    await purge(**options)
    assert await admin.fetchval("SELECT to_regclass($1)", name) is None
    assert await admin.fetchval("SELECT to_regclass($1)", f"{name}_pauses") is None
    await purge(**options)  # purging nothing is fine


async def test_1x_style_factory_call(postgres_url: str, table: str) -> None:
    async with postgres_repository(postgres_url=postgres_url, postgres_table_name=table) as repo:  # validates too
        assert await repo.register([rec("a")], now=T0, mode=RegisterMode.FORCE) == [True]


# --- timeouts ------------------------------------------------------------------------------------


async def test_slow_statement_hits_the_command_timeout(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    options = {
        "postgres_url": postgres_url,
        "postgres_table_name": table,
        "postgres_command_timeout": 0.5,
        "postgres_pool_max_size": 1,
    }
    async with open_repository(**options) as repo:
        await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        async with admin.transaction():  # a row lock held elsewhere makes the delete wait
            await admin.execute(f'SELECT 1 FROM "{table}" WHERE name = $1 FOR UPDATE', "a")
            started = time.monotonic()
            with pytest.raises(BackendError) as info:
                await repo.delete("p", "a")
            assert time.monotonic() - started < 3
            assert "postgres delete" in str(info.value)
        # The statement was cancelled server-side; the connection is usable again.
        assert await repo.delete("p", "a") is True


# --- batches -------------------------------------------------------------------------------------


async def test_register_with_repeated_keys_in_one_batch(repository: Repository) -> None:
    a1, a2 = rec("a", T0, '"1"'), rec("a", T0 - timedelta(hours=1), '"2"')
    assert await repository.register([a1, rec("b"), a2], now=T0, mode=RegisterMode.CREATE) == [True, True, False]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert stored.spec == '"1"'
    assert await repository.register([a1, a2, a1], now=T0, mode=RegisterMode.UPDATE) == [True, True, True]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert (stored.spec, stored.scheduled_at) == ('"1"', T0 - timedelta(hours=1))
    assert await repository.register([a2, a1], now=T0, mode=RegisterMode.FORCE) == [True, True]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert (stored.spec, stored.scheduled_at) == ('"1"', T0)


async def test_commit_and_unlock_with_repeats_and_mixed_parents(repository: Repository) -> None:
    await repository.register(
        [rec("a", parent="x"), rec("a", parent="y"), rec("b", parent="y")], now=T0, mode=RegisterMode.CREATE
    )
    for parent in ("x", "y"):
        await repository.claim(parent, now=T0, limit=10, lease_until=T0 + timedelta(minutes=1), token="t")
    results = await repository.commit(
        [
            Completion("y", "a", "t", None),
            Completion("x", "a", "t", T0 + timedelta(hours=1)),
            Completion("y", "a", "t", None),  # same lease twice: the second finds it gone
            Completion("y", "b", "other", None),
        ]
    )
    assert results == [True, True, False, False]
    assert await repository.get("y", "a") is None
    x = await repository.get("x", "a")
    assert x is not None
    assert x.scheduled_at == T0 + timedelta(hours=1)
    assert x.locked_by is None
    assert await repository.unlock([Lease("y", "b", "t"), Lease("y", "b", "t"), Lease("x", "a", "t")]) == [
        True,
        False,
        False,
    ]
    assert await repository.commit([]) == []
    assert await repository.unlock([]) == []
    assert await repository.register([], now=T0, mode=RegisterMode.UPDATE) == []


async def test_claim_limit_zero_and_unknown_parent(repository: Repository) -> None:
    await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    assert await repository.claim("p", now=T0, limit=0, lease_until=T0, token="t") == []
    assert await repository.claim("nope", now=T0, limit=10, lease_until=T0, token="t") == []


async def test_bulk_register_and_claim(repository: Repository) -> None:
    records = [rec(f"r{i:05d}", T0 - timedelta(seconds=i % 100)) for i in range(20_000)]
    assert await repository.register(records, now=T0, mode=RegisterMode.UPDATE) == [True] * 20_000
    claimed = await repository.claim("p", now=T0, limit=1000, lease_until=T0 + timedelta(minutes=1), token="t")
    assert len(claimed) == 1000
    due = [r.scheduled_at for r in claimed]
    assert due == sorted(due)
    assert due[0] == T0 - timedelta(seconds=99)
    results = await repository.commit([Completion("p", r.name, "t", T0 + timedelta(days=1)) for r in claimed])
    assert results == [True] * 1000


# --- upgrading tables of earlier 2.x versions ---------------------------------------------------------

#: The table as pyncette-postgres 2.0 created it, before the state column.
OLD_DDL = """
CREATE TABLE "{t}" (
    parent text COLLATE "C" NOT NULL, name text COLLATE "C" NOT NULL, spec text NULL,
    scheduled_at timestamptz NOT NULL, locked_until timestamptz NULL, locked_by text NULL,
    PRIMARY KEY (parent, name)
);
CREATE INDEX "{t}_due" ON "{t}" (parent, GREATEST(scheduled_at, locked_until));
INSERT INTO "{t}" (parent, name, spec, scheduled_at) VALUES ('p', 'old', '{{}}', '2030-01-01 00:00:00+00');
"""

COLUMNS_2_0 = ("parent", "name", "spec", "scheduled_at", "locked_until", "locked_by")

#: The table as the version before pausing created it: with the state column, without the paused flag and
#: the rules table, claimed through the due-work index.
STATE_DDL = """
CREATE TABLE "{t}" (
    parent text COLLATE "C" NOT NULL, name text COLLATE "C" NOT NULL, spec text NULL,
    scheduled_at timestamptz NOT NULL, locked_until timestamptz NULL, locked_by text NULL, state text NULL,
    PRIMARY KEY (parent, name)
);
CREATE INDEX "{t}_due" ON "{t}" (parent, GREATEST(scheduled_at, locked_until));
INSERT INTO "{t}" (parent, name, spec, scheduled_at, locked_until, locked_by, state) VALUES
    ('p', 'a1', '{{"n": 1}}', '2030-01-01 00:00:00+00', NULL, NULL, '{{"s": 1}}'),
    ('p', 'a2', NULL, '2029-12-31 23:00:00+00', NULL, NULL, NULL),
    ('p', 'b1', '{{"n": 3}}', '2030-01-01 00:00:00+00', '2030-01-01 00:00:30+00', 'tok', NULL),
    ('q', 'a1', '{{}}', '2030-01-01 00:00:00+00', NULL, NULL, NULL);
"""


async def _layout(admin: asyncpg.Connection, table: str) -> tuple[set[str], set[str], bool]:
    """The columns of ``table``, its indexes, and whether its rules table exists."""
    columns = {
        row[0]
        for row in await admin.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            f'"{table}"',
        )
    }
    indexes = {row[0] for row in await admin.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1", table)}
    rules = await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{table}_pauses"')
    return columns, indexes, rules


async def test_an_existing_table_gains_the_state_column(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    await admin.execute(OLD_DDL.format(t=table))
    async with open_repository(postgres_url=postgres_url, postgres_table_name=table) as repo:
        old = await repo.get("p", "old")
        assert old is not None and (old.state, old.scheduled_at, old.spec) == (None, T0, "{}")
        [claimed] = await repo.claim("p", now=T0, limit=5, lease_until=T0 + timedelta(seconds=30), token="t")
        assert (claimed.name, claimed.state) == ("old", None)
        assert await repo.commit([Completion("p", "old", "t", T0 + timedelta(hours=1), state='{"v": 1}')]) == [True]
    async with open_repository(postgres_url=postgres_url, postgres_table_name=table) as repo:
        stored = await repo.get("p", "old")
        assert stored is not None and stored.state == '{"v": 1}' and stored.scheduled_at == T0 + timedelta(hours=1)
    kind = await admin.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass($1) "
        "AND attname = 'state' AND NOT attnotnull",
        f'"{table}"',
    )
    assert kind == "text"
    columns, indexes, rules = await _layout(admin, table)
    assert {"state", "paused"} <= columns and indexes == {f"{table}_pkey", f"{table}_claim"} and rules


async def test_a_table_from_before_pausing_is_upgraded_in_place(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    await admin.execute(STATE_DDL.format(t=table))
    before = [tuple(row) for row in await admin.fetch(f'SELECT * FROM "{table}" ORDER BY parent, name')]
    options = {"postgres_url": postgres_url, "postgres_table_name": table}
    async with open_repository(**options) as repo:
        columns, indexes, rules = await _layout(admin, table)
        assert "paused" in columns and rules
        assert indexes == {f"{table}_pkey", f"{table}_claim"}  # the due-work index is replaced
        # The data is intact and no record is held.
        after = await admin.fetch(
            f'SELECT parent, name, spec, scheduled_at, locked_until, locked_by, state, paused FROM "{table}"'
            " ORDER BY parent, name"
        )
        assert [tuple(row)[:-1] for row in after] == before
        assert [row["paused"] for row in after] == [False] * 4
        b1 = await repo.get("p", "b1")
        assert b1 is not None and (b1.locked_by, b1.locked_until) == ("tok", T0 + timedelta(seconds=30))
        # Pausing works on the old records and on records registered afterwards.
        assert await repo.pause(PauseRule("p", "a", True), now=T0) == 2
        await repo.register([rec("a3"), rec("c1")], now=T0, mode=RegisterMode.CREATE)
        assert [r.name for r in await repo.claim("p", now=T0, limit=10, lease_until=T0, token="t")] == ["c1"]
        assert await repo.pauses("p") == [PauseRule("p", "a", True)]
        assert await repo.resume("p", "a", prefix=True, now=T0)
        claimed = await repo.claim("p", now=T0 + timedelta(minutes=1), limit=10, lease_until=T0, token="t2")
        assert [r.name for r in claimed] == ["a2", "a1", "a3", "c1", "b1"]  # earliest first, b1's lease expired
        assert (claimed[1].spec, claimed[1].state) == ('{"n": 1}', '{"s": 1}')
        # An instance of the previous version, still running during the upgrade, inserts without the flag.
        await admin.execute(
            f'INSERT INTO "{table}" (parent, name, spec, scheduled_at) VALUES ($1, $2, NULL, $3)', "q", "a2", T0
        )
        assert [r.name for r in await repo.claim("q", now=T0, limit=10, lease_until=T0, token="t")] == ["a1", "a2"]
    # Opening it again changes nothing.
    async with open_repository(**options) as repo:
        assert await _layout(admin, table) == (columns, indexes, rules)
        stored = await repo.get("q", "a2")
        assert stored is not None and stored.spec is None


async def test_skip_table_create_with_a_table_from_an_earlier_version(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    await admin.execute(OLD_DDL.format(t=table))
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_skip_table_create": True}
    with pytest.raises(ConfigurationError) as info:
        async with open_repository(**options):
            pass
    message = str(info.value)
    assert "'state'" in message and "'paused'" in message and f"'{table}_pauses'" in message and table in message
    assert "ADD COLUMN IF NOT EXISTS state text" in message and "ADD COLUMN IF NOT EXISTS paused boolean" in message
    # Nothing was changed; the statements the message names upgrade the table.
    assert await _layout(admin, table) == (set(COLUMNS_2_0), {f"{table}_pkey", f"{table}_due"}, False)
    await admin.execute(upgrade_ddl(table))
    async with open_repository(**options) as repo:
        stored = await repo.get("p", "old")
        assert stored is not None and stored.state is None
        assert await repo.pause(PauseRule("p", "", True), now=T0) == 1
        assert await repo.claim("p", now=T0, limit=5, lease_until=T0, token="t") == []


async def test_skip_table_create_warns_about_the_replaced_index(
    postgres_url: str, table: str, admin: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await admin.execute(STATE_DDL.format(t=table))
    await admin.execute(upgrade_ddl(table).replace("DROP INDEX", "-- DROP INDEX"))
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_skip_table_create": True}
    async with open_repository(**options):
        pass
    assert f"index '{table}_due' is no longer used" in caplog.text


async def test_a_foreign_table_under_the_rules_table_name_is_reported(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    await admin.execute(f'CREATE TABLE "{table}_pauses" (id int PRIMARY KEY)')
    with pytest.raises(ConfigurationError, match=f"'{table}_pauses' exists but is not the pause rules table"):
        async with open_repository(postgres_url=postgres_url, postgres_table_name=table):
            pass
    assert await admin.fetchval("SELECT to_regclass($1)", f'"{table}"') is None  # nothing was created


# --- pausing -----------------------------------------------------------------------------------------


async def test_a_registration_in_flight_when_a_pause_starts_is_held(
    repository: Repository, admin: asyncpg.Connection
) -> None:
    assert isinstance(repository, PostgresRepository)
    # A registration that read the rules before the pause wrote its rule commits after: the pause waits for
    # it (the rules table's lock), so its UPDATE sees the new record.
    await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    async with admin.transaction():
        statement = repository._sql.register[RegisterMode.CREATE]
        assert len(await admin.fetch(statement, ["p"], ["b"], ["{}"], [T0], [None], repository.channel)) == 1
        pausing = asyncio.ensure_future(repository.pause(PauseRule("p", "", True), now=T0))
        await asyncio.sleep(0.3)
        assert not pausing.done()
    assert await asyncio.wait_for(pausing, 5) == 2
    assert await repository.claim("p", now=T0, limit=10, lease_until=T0, token="t") == []
    # And the other way round: a registration waits for a pause in progress, then sees its rule.
    async with admin.transaction():
        await admin.execute(f'LOCK TABLE "{repository.table_name}_pauses" IN ACCESS EXCLUSIVE MODE')
        await admin.execute(f'INSERT INTO "{repository.table_name}_pauses" VALUES ($1, $2, $3, NULL)', "q", "c", True)
        registering = asyncio.ensure_future(
            repository.register([rec("c", parent="q")], now=T0, mode=RegisterMode.CREATE)
        )
        await asyncio.sleep(0.3)
        assert not registering.done()
    assert await asyncio.wait_for(registering, 5) == [True]
    assert await repository.claim("q", now=T0, limit=10, lease_until=T0, token="t") == []


async def test_a_resume_in_flight_does_not_strand_a_new_record(
    repository: Repository, admin: asyncpg.Connection
) -> None:
    assert isinstance(repository, PostgresRepository)
    # A registration that saw the rule (and stored its record held) commits before the resume releases.
    await repository.pause(PauseRule("p", "", True), now=T0)
    async with admin.transaction():
        statement = repository._sql.register[RegisterMode.CREATE]
        assert len(await admin.fetch(statement, ["p"], ["b"], ["{}"], [T0], [None], repository.channel)) == 1
        resuming = asyncio.ensure_future(repository.resume("p", "", prefix=True, now=T0))
        await asyncio.sleep(0.3)
        assert not resuming.done()
    assert await asyncio.wait_for(resuming, 5) is True
    assert [r.name for r in await repository.claim("p", now=T0, limit=10, lease_until=T0, token="t")] == ["b"]


async def test_pause_counts_and_flags_in_bulk(repository: Repository, admin: asyncpg.Connection) -> None:
    assert isinstance(repository, PostgresRepository)
    names = [f"{prefix}{i:04d}" for prefix in ("x", "xy", "y") for i in range(3000)]
    await repository.register([rec(n) for n in names], now=T0, mode=RegisterMode.CREATE)
    assert await repository.pause(PauseRule("p", "xy", True), now=T0) == 3000
    assert await repository.pause(PauseRule("p", "x", True), now=T0) == 6000  # counts those already held too
    table = repository.table_name
    held = f'SELECT count(*) FROM "{table}" WHERE paused'
    assert await admin.fetchval(held) == 6000
    assert await repository.resume("p", "x", prefix=True, now=T0)
    assert await admin.fetchval(held) == 3000  # still held by "xy"
    assert await repository.pause(PauseRule("p", "nothing", True), now=T0) == 0
    assert await repository.pause(PauseRule("p", "y0001", False), now=T0) == 1
    assert await admin.fetchval(held) == 3001
    assert not await repository.resume("p", "y0001", prefix=True, now=T0)
    assert await repository.resume("p", "y0001", prefix=False, now=T0)
    assert await repository.resume("p", "xy", prefix=True, now=T0)
    assert await admin.fetchval(held) == 0
    assert await repository.pauses("p") == [PauseRule("p", "nothing", True)]


async def test_non_ascii_prefixes(repository: Repository) -> None:
    assert isinstance(repository, PostgresRepository)
    # The primary-key range of a prefix is derived by PostgreSQL itself, byte-wise (COLLATE "C").
    names = ["é", "éa", "ê", "e", "日本", "日本語", "日", "\U0010ffff", "\U0010ffffa", "z\U0010ffff"]
    await repository.register([rec(n) for n in names], now=T0, mode=RegisterMode.CREATE)
    for prefix, held in [("é", 2), ("日本", 2), ("\U0010ffff", 2), ("日", 3)]:
        assert await repository.pause(PauseRule("p", prefix, True), now=T0) == held
    claimed = await repository.claim("p", now=T0, limit=20, lease_until=T0, token="t")
    assert sorted(r.name for r in claimed) == sorted(["ê", "e", "z\U0010ffff"])


async def test_parents_pages_in_key_order(repository: Repository) -> None:
    assert isinstance(repository, PostgresRepository)
    parents = ["", "a", "a b", "b", "é", "日"]
    await repository.register([rec("x", parent=p) for p in parents], now=T0, mode=RegisterMode.CREATE)
    assert await repository.parents(limit=10, continuation=None) == (parents, None)
    assert await repository.parents(limit=2, continuation=None) == (["", "a"], "a")
    assert await repository.parents(limit=2, continuation="a") == (["a b", "b"], "b")
    assert await repository.parents(limit=4, continuation="b") == (["é", "日"], None)
    with pytest.raises(ValueError, match="limit"):
        await repository.parents(limit=0, continuation=None)


# --- wake-ups (LISTEN/NOTIFY) --------------------------------------------------------------------------


class Heard:
    """The payloads of the notifications an outside connection hears on one channel."""

    def __init__(self, connection: asyncpg.Connection, channel: str) -> None:
        self.connection, self.channel = connection, channel
        self.payloads: list[str] = []
        self._end = asyncio.Event()

    def _received(self, connection: object, pid: int, channel: str, payload: object) -> None:
        if payload == "end":
            self._end.set()
        else:
            self.payloads.append(str(payload))

    async def __aenter__(self) -> Heard:
        await self.connection.add_listener(self.channel, self._received)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.remove_listener(self.channel, self._received)

    async def take(self) -> list[str]:
        """Everything sent on the channel by transactions committed so far (then forgotten)."""
        self._end.clear()
        # Delivered in commit order: once this one arrives, every earlier one has.
        await self.connection.execute("SELECT pg_notify($1, 'end')", self.channel)
        with anyio.fail_after(5):
            await self._end.wait()
        taken, self.payloads = self.payloads, []
        return taken


def as_times(payloads: list[str]) -> list[datetime | None]:
    return [parse_hint(p) for p in payloads]


def test_channel_names_fit_postgres_identifier_limit() -> None:
    assert channel_name("public", "pyncette_tasks") == "pyncette:public.pyncette_tasks"
    long_table = "a" * 63
    names = {channel_name(schema, long_table) for schema in ("public", "other", "ü" * 30)}
    assert len(names) == 3
    assert all(len(name.encode()) <= 63 and long_table[:30] in name for name in names)
    assert channel_name("s", "t") != channel_name("s", "u")


def test_hint_payloads() -> None:
    assert parse_hint("1893456000") == T0
    assert parse_hint("1893456000.000001") == T0 + timedelta(microseconds=1)
    assert parse_hint("-62135596800") == datetime(1, 1, 1, tzinfo=timezone.utc)
    for unreadable in ("Infinity", "-Infinity", "NaN", "1e30", "-1e30", "", "x"):
        assert parse_hint(unreadable) is None


async def test_one_hint_per_register_and_none_for_the_runs_own_writes(
    repository: PostgresRepository, admin: asyncpg.Connection
) -> None:
    async with Heard(admin, repository.channel) as heard:
        later = T0 + timedelta(minutes=5)
        batch = [rec("a", later), rec("b", T0), rec("c", later + timedelta(minutes=1))]
        assert await repository.register(batch, now=T0, mode=RegisterMode.CREATE) == [True] * 3
        assert as_times(await heard.take()) == [T0]
        # Nothing written, nothing sooner, or a later time: no hint.
        assert await repository.register(batch, now=T0, mode=RegisterMode.CREATE) == [False] * 3
        assert await repository.register(batch, now=T0, mode=RegisterMode.UPDATE) == [True] * 3
        assert await repository.register([rec("a", later + timedelta(hours=1))], now=T0, mode=RegisterMode.FORCE)
        assert await heard.take() == []
        # Moved sooner (one of them): one hint naming the earliest of the moved ones.
        sooner = [rec("a", T0 - timedelta(minutes=1)), rec("b", T0), rec("c", T0 - timedelta(minutes=2))]
        assert await repository.register(sooner, now=T0, mode=RegisterMode.UPDATE) == [True] * 3
        assert as_times(await heard.take()) == [T0 - timedelta(minutes=2)]
        # Claim, extend, commit and unlock never hint, even a commit moving the record sooner.
        lease_until = T0 + timedelta(minutes=1)
        claimed = await repository.claim("p", now=T0, limit=10, lease_until=lease_until, token="t")
        assert [r.name for r in claimed] == ["c", "a", "b"]
        assert await repository.extend(Lease("p", "a", "t"), lease_until=lease_until + timedelta(minutes=1))
        assert await repository.commit([Completion("p", "a", "t", T0 - timedelta(hours=1))]) == [True]
        assert await repository.commit([Completion("p", "b", "t", None)]) == [True]
        assert await repository.unlock([Lease("p", "c", "t")]) == [True]
        assert await heard.take() == []
        # Run-now: one hint when it writes, none when it does not.
        c = await repository.get("p", "c")
        assert c is not None
        args: dict[str, Any] = {"scheduled_at": T0 + timedelta(seconds=1), "state": None, "now": T0}
        assert await repository.reschedule("p", "c", expected=c.scheduled_at, **args)
        assert not await repository.reschedule("p", "c", expected=c.scheduled_at, **args)
        assert as_times(await heard.take()) == [T0 + timedelta(seconds=1)]


async def test_pausing_does_not_hint_and_resuming_does(
    repository: PostgresRepository, admin: asyncpg.Connection
) -> None:
    async with Heard(admin, repository.channel) as heard:
        assert await repository.pause(PauseRule("p", "job-", prefix=True), now=T0) == 0
        held = [rec("job-1", T0 + timedelta(seconds=2)), rec("job-2", T0 + timedelta(seconds=1))]
        await repository.register(held, now=T0, mode=RegisterMode.CREATE)  # held: nothing to wake for
        assert await repository.pause(PauseRule("p", "job-2", prefix=False), now=T0) == 1
        assert await heard.take() == []
        assert await repository.resume("p", "job-", prefix=True, now=T0)
        assert as_times(await heard.take()) == [T0 + timedelta(seconds=2)]  # job-2 is still held by its own rule
        assert not await repository.resume("p", "job-", prefix=True, now=T0)  # no such rule: nothing released
        assert await heard.take() == []
        assert await repository.resume("p", "job-2", prefix=False, now=T0)
        assert as_times(await heard.take()) == [T0 + timedelta(seconds=1)]


async def test_a_failed_registration_sends_no_hint(repository: PostgresRepository, admin: asyncpg.Connection) -> None:
    # A key too large for the primary key's index fails the whole statement after the first row is written.
    too_large = os.urandom(8000).hex()  # incompressible
    async with Heard(admin, repository.channel) as heard:
        with pytest.raises(ConfigurationError):
            await repository.register([rec("a"), rec(too_large)], now=T0, mode=RegisterMode.CREATE)
        assert await repository.get("p", "a") is None
        assert await heard.take() == []


async def test_wakeups_hear_their_own_table_only(postgres_url: str, repository: PostgresRepository) -> None:
    other_table = unique_table()
    try:
        async with open_repository(postgres_url=postgres_url, postgres_table_name=other_table) as other:
            assert isinstance(other, PostgresRepository)
            assert other.channel != repository.channel
            async with repository.wakeups() as hints:
                await other.register([rec("a", T0 - timedelta(days=1))], now=T0, mode=RegisterMode.CREATE)
                await repository.register([rec("a", T0)], now=T0, mode=RegisterMode.CREATE)
                with anyio.fail_after(5):
                    # The other table's hint was committed first: it would have come first.
                    assert await anext(aiter(hints)) == T0
    finally:
        await purge(postgres_url=postgres_url, postgres_table_name=other_table)


async def test_wakeups_use_their_own_connection_which_kill_connections_cuts(
    repository: PostgresRepository, admin: asyncpg.Connection
) -> None:
    async def listening() -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pyncette' AND query = $1"
        count: int = await admin.fetchval(query, f'LISTEN "{repository.channel}"')
        return count

    async with repository.wakeups() as hints:
        assert await listening() == 1
        await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        with anyio.fail_after(5):
            assert await anext(aiter(hints)) == T0
        assert await repository.kill_connections() == 2  # the pool's one and the listener
        with anyio.fail_after(5), pytest.raises(BackendError, match="listening connection was lost"):
            await anext(aiter(hints))
    assert await listening() == 0
    # Opened again, it works again (as does the pool).
    async with repository.wakeups() as hints:
        await repository.register([rec("b", T0 + timedelta(seconds=1))], now=T0, mode=RegisterMode.CREATE)
        with anyio.fail_after(5):
            assert await anext(aiter(hints)) == T0 + timedelta(seconds=1)
    assert await listening() == 0


async def test_wakeups_to_an_unreachable_server_fail_without_secrets(table: str) -> None:
    url = "postgres://user:s3cret-pw@127.0.0.1:1/test"
    settings = backend.settings({"postgres_url": url, "postgres_table_name": table, "postgres_connect_timeout": 2})
    repository = PostgresRepository(None, table, Connections(settings), channel_name("public", table))
    with pytest.raises(BackendError) as raised:
        async with repository.wakeups():
            pass
    assert "127.0.0.1:1" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
