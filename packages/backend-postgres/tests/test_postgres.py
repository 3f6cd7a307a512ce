"""PostgreSQL-specific behaviour: the descriptor, connecting, table layout, recovery, batch edge cases.

Options and secrets are in test_postgres_options.py, corrupt records in test_postgres_corrupt.py, and
killed connections and server restarts in test_postgres_recovery.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from pyncette import backends
from pyncette.abc import Completion, Lease, Record, RegisterMode, Repository
from pyncette.errors import BackendError, ConfigurationError
from pyncette_postgres import PostgresBackend, PostgresRepository, backend, postgres_repository
from pyncette_postgres._schema import ddl, index_name

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
    assert (caps.persistent, caps.coordinated, caps.asyncio_only, caps.notifications) == (True, True, True, False)


def test_index_name_fits_postgres_identifier_limit() -> None:
    assert index_name("pyncette_tasks") == "pyncette_tasks_due"
    long_a, long_b = "a" * 62 + "b", "a" * 62 + "c"
    assert len(index_name(long_a)) <= 63
    assert index_name(long_a) != index_name(long_b)


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
    ]
    indexes = {
        row["indexname"]: row["indexdef"]
        for row in await admin.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", table)
    }
    assert indexes[f"{table}_pkey"].endswith("USING btree (parent, name)")
    assert indexes[f"{table}_due"].endswith("USING btree (parent, GREATEST(scheduled_at, locked_until))")


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
    await purge(**options)
    assert await admin.fetchval("SELECT to_regclass($1)", name) is None
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


# --- the state column (added after 2.0) --------------------------------------------------------------

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


async def test_skip_table_create_with_a_table_lacking_the_state_column(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    await admin.execute(OLD_DDL.format(t=table))
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_skip_table_create": True}
    with pytest.raises(ConfigurationError) as info:
        async with open_repository(**options):
            pass
    message = str(info.value)
    assert "'state'" in message and table in message and "ADD COLUMN IF NOT EXISTS state text" in message
    # Nothing was changed; the fix the message names works.
    assert (
        await admin.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'state'", f'"{table}"'
        )
        == 0
    )
    await admin.execute(f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS state text NULL')
    async with open_repository(**options) as repo:
        stored = await repo.get("p", "old")
        assert stored is not None and stored.state is None
