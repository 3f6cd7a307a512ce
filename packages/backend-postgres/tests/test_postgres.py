"""PostgreSQL-specific behaviour: options, connecting, table layout, recovery, batch edge cases."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
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


@pytest.fixture
async def table(postgres_url: str) -> AsyncIterator[str]:
    """A fresh table name, dropped after the test."""
    name = unique_table()
    yield name
    await backend.purge({"postgres_url": postgres_url, "postgres_table_name": name})


@pytest.fixture
async def repository(postgres_url: str, table: str) -> AsyncIterator[Repository]:
    async with backend.open({"postgres_url": postgres_url, "postgres_table_name": table}) as repo:
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
    for name in ("postgres_url", "postgres_table_name", "postgres_skip_table_create"):  # the 1.x names
        assert name in backend.options
    for name in (
        "postgres_pool_min_size",
        "postgres_pool_max_size",
        "postgres_connect_timeout",
        "postgres_command_timeout",
    ):
        assert name in backend.options


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "postgres_url is required"),
        ({"postgres_url": "mysql://root@localhost/x"}, "mysql://root@localhost/x"),
        ({"postgres_url": 42}, "42"),
        ({"postgres_table_name": "bad-name"}, "'bad-name'"),
        ({"postgres_table_name": 'x"; DROP TABLE y; --'}, "DROP TABLE"),
        ({"postgres_table_name": "1starts_with_digit"}, "'1starts_with_digit'"),
        ({"postgres_table_name": "a" * 64}, "a" * 64),
        ({"postgres_table_name": ""}, "''"),
        ({"postgres_table_name": "schema.table"}, "'schema.table'"),
        ({"postgres_skip_table_create": "maybe"}, "'maybe'"),
        ({"postgres_pool_min_size": -1}, "postgres_pool_min_size must be an integer >= 0, got -1"),
        ({"postgres_pool_max_size": 0}, "postgres_pool_max_size must be an integer >= 1, got 0"),
        ({"postgres_pool_max_size": "many"}, "'many'"),
        ({"postgres_pool_max_size": True}, "True"),
        ({"postgres_pool_min_size": 5, "postgres_pool_max_size": 2}, "postgres_pool_min_size (5)"),
        ({"postgres_connect_timeout": 0}, "postgres_connect_timeout must be a positive number of seconds, got 0"),
        ({"postgres_connect_timeout": "soon"}, "'soon'"),
        ({"postgres_connect_timeout": float("nan")}, "nan"),
        ({"postgres_command_timeout": -5}, "postgres_command_timeout must be a positive number of seconds, got -5"),
        ({"postgres_application_name": "has space"}, "'has space'"),
        ({"postgres_colour": "blue"}, "postgres_colour"),
    ],
)
def test_bad_options_are_refused_naming_the_value(options: dict[str, Any], expected: str) -> None:
    full = {"postgres_url": "postgres://u@localhost/db", **options}
    if not options:
        full = {}
    with pytest.raises(ConfigurationError) as info:
        backend.open(full)
    assert expected in str(info.value)


def test_bad_url_message_hides_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.open({"postgres_url": "mysql://root:hunter2@localhost/x"})
    assert "hunter2" not in str(info.value)
    assert "mysql://root:***@localhost/x" in str(info.value)


def test_options_from_strings_are_accepted() -> None:
    from pyncette_postgres._config import parse_settings

    settings = parse_settings(
        {
            "postgres_url": "postgresql://u@h/db",
            "postgres_skip_table_create": "true",
            "postgres_pool_min_size": "0",
            "postgres_pool_max_size": "4",
            "postgres_connect_timeout": "1.5",
            "postgres_table_name": "A" * 63,
        }
    )
    assert settings.skip_table_create is True
    assert (settings.pool_min_size, settings.pool_max_size, settings.connect_timeout) == (0, 4, 1.5)
    assert settings.server == "h:5432"


def test_index_name_fits_postgres_identifier_limit() -> None:
    assert index_name("pyncette_tasks") == "pyncette_tasks_due"
    long_a, long_b = "a" * 62 + "b", "a" * 62 + "c"
    assert len(index_name(long_a)) <= 63
    assert index_name(long_a) != index_name(long_b)


def test_importing_does_not_connect() -> None:
    # open() validates but returns an unentered context manager: nothing to connect to yet.
    backend.open({"postgres_url": "postgres://u@127.0.0.1:1/db"})


# --- connecting ----------------------------------------------------------------------------------


async def test_unreachable_server_raises_backend_error_quickly() -> None:
    url = "postgres://someone:s3cret@127.0.0.1:1/db"
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        async with backend.open({"postgres_url": url, "postgres_connect_timeout": 2}):
            pass
    assert time.monotonic() - started < 5
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_silent_server_times_out_within_the_connect_timeout() -> None:
    # A server that accepts TCP connections but never answers: only the timeout can end the wait.
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            async with backend.open(
                {"postgres_url": f"postgres://u:pw@127.0.0.1:{port}/db", "postgres_connect_timeout": 1}
            ):
                pass
        assert 0.9 < time.monotonic() - started < 4
        assert f"127.0.0.1:{port}" in str(info.value)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_unknown_database_is_a_configuration_error(postgres_url: str) -> None:
    from urllib.parse import urlsplit

    url = urlsplit(postgres_url)._replace(path="/no_such_database_here").geturl()
    with pytest.raises(ConfigurationError) as info:
        async with backend.open({"postgres_url": url}):
            pass
    assert "no_such_database_here" in str(info.value)
    assert "postgres_url" in str(info.value)


async def test_purge_of_unreachable_server_raises_backend_error() -> None:
    with pytest.raises(BackendError):
        await backend.purge({"postgres_url": "postgres://u@127.0.0.1:1/db", "postgres_connect_timeout": 1})


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
    async with backend.open(options) as repo:
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
    async with backend.open(options) as first:
        await first.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    async with backend.open(options) as second:
        assert await second.get("p", "a") is not None


async def test_concurrent_startup_creates_the_table_once(postgres_url: str, table: str) -> None:
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_pool_min_size": 1}

    async def start(i: int) -> bool:
        async with backend.open(options) as repo:
            return (await repo.register([rec(f"r{i}")], now=T0, mode=RegisterMode.CREATE)) == [True]

    assert await asyncio.gather(*(start(i) for i in range(10))) == [True] * 10


async def test_skip_table_create_with_missing_table(postgres_url: str, table: str, admin: asyncpg.Connection) -> None:
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_skip_table_create": True}
    with pytest.raises(ConfigurationError) as info:
        async with backend.open(options):
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
    async with backend.open(options) as repo:
        assert await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]
        assert [r.name for r in await repo.claim("p", now=T0, limit=5, lease_until=T0, token="t")] == ["a"]


async def test_incompatible_existing_table_is_reported(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    # A table of the same name but another layout (e.g. left over from Pyncette 1.x).
    await admin.execute(f'CREATE TABLE "{table}" (name text PRIMARY KEY, parent_name text, task_spec text)')
    with pytest.raises(ConfigurationError) as info:
        async with backend.open({"postgres_url": postgres_url, "postgres_table_name": table}):
            pass
    assert "scheduled_at" in str(info.value)
    assert table in str(info.value)


async def test_purge_drops_the_table(postgres_url: str, admin: asyncpg.Connection) -> None:
    name = unique_table()
    options = {"postgres_url": postgres_url, "postgres_table_name": name}
    async with backend.open(options):
        assert await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
    await backend.purge(options)
    assert await admin.fetchval("SELECT to_regclass($1)", name) is None
    await backend.purge(options)  # purging nothing is fine


async def test_1x_style_factory_call(postgres_url: str, table: str) -> None:
    async with postgres_repository(postgres_url=postgres_url, postgres_table_name=table) as repo:
        assert await repo.register([rec("a")], now=T0, mode=RegisterMode.FORCE) == [True]


# --- recovery ------------------------------------------------------------------------------------


async def test_killed_connections_are_survived(postgres_url: str, table: str, admin: asyncpg.Connection) -> None:
    app = "pyncette-kill-" + uuid.uuid4().hex[:8]
    options = {
        "postgres_url": postgres_url,
        "postgres_table_name": table,
        "postgres_application_name": app,
        "postgres_pool_min_size": 2,
    }
    async with backend.open(options) as repo:
        await repo.register([rec(f"r{i}") for i in range(10)], now=T0, mode=RegisterMode.CREATE)
        for _ in range(3):  # kill repeatedly: each time the pool must replace its connections
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app
            )
            assert killed >= 1
            failures = 0
            for _attempt in range(5):
                try:
                    claimed = await repo.claim("p", now=T0, limit=1, lease_until=T0 + timedelta(seconds=1), token="x")
                except BackendError:
                    failures += 1
                    continue
                assert len(claimed) == 1
                break
            else:
                pytest.fail("repository did not recover after its connections were killed")
            assert failures <= 1
        assert (await repo.get("p", "r0")) is not None


async def test_call_on_a_connection_killed_mid_query_raises_backend_error(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    app = "pyncette-mid-" + uuid.uuid4().hex[:8]
    options = {
        "postgres_url": postgres_url,
        "postgres_table_name": table,
        "postgres_application_name": app,
        "postgres_pool_max_size": 1,
    }
    async with backend.open(options) as repo:
        assert isinstance(repo, PostgresRepository)
        await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        # Hold a row lock from outside so the repository's next write blocks server-side.
        async with admin.transaction():
            await admin.execute(f'SELECT 1 FROM "{table}" WHERE name = $1 FOR UPDATE', "a")
            blocked = asyncio.ensure_future(repo.delete("p", "a"))
            for _ in range(50):
                waiting = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    app,
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app
            )
            with pytest.raises(BackendError):
                await blocked
        assert await repo.delete("p", "a") is True


async def test_slow_statement_hits_the_command_timeout(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    options = {
        "postgres_url": postgres_url,
        "postgres_table_name": table,
        "postgres_command_timeout": 0.5,
        "postgres_pool_max_size": 1,
    }
    async with backend.open(options) as repo:
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
