"""MySQL / MariaDB-specific behaviour: options, connecting, table layout, exact names, recovery, locking."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from pyncette import backends
from pyncette.abc import Completion, Lease, Record, RegisterMode, Repository
from pyncette.errors import BackendError, ConfigurationError
from pyncette_mysql import MySQLBackend, MySQLRepository, backend, mysql_repository
from pyncette_mysql._backend import Settings
from pyncette_mysql._schema import DUE_INDEX, Server, Upsert, create_table_sql

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)
SECRET = "s3cret-Passw0rd"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unique_table() -> str:
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
async def table(mysql_options: dict[str, Any]) -> AsyncIterator[str]:
    """A fresh table name, dropped after the test."""
    name = unique_table()
    yield name
    await backend.purge({**mysql_options, "mysql_table_name": name})


@pytest.fixture
def options(mysql_options: dict[str, Any], table: str) -> dict[str, Any]:
    return {**mysql_options, "mysql_table_name": table}


@pytest.fixture
async def repository(options: dict[str, Any]) -> AsyncIterator[Repository]:
    async with backend.open(options) as repo:
        yield repo


def rec(name: str, at: datetime = T0, spec: str | None = "{}", parent: str = "p") -> Record:
    return Record(parent=parent, name=name, spec=spec, scheduled_at=at)


async def query(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cursor:
        await cursor.execute(sql)
        return list(await cursor.fetchall())


def pool_connection_ids(repository: Repository) -> list[int]:
    """Server-side ids of the repository's pooled connections (white box)."""
    assert isinstance(repository, MySQLRepository)
    pool = repository._pool
    return [conn.thread_id() for conn in [*pool._free, *pool._used] if not conn.closed]


# --- the descriptor ------------------------------------------------------------------------------


def test_descriptor_and_entry_point() -> None:
    assert isinstance(backend, MySQLBackend)
    assert mysql_repository is backend
    assert backend.name == "mysql"
    caps = backend.capabilities
    assert (caps.persistent, caps.coordinated, caps.asyncio_only) == (True, True, True)
    for legacy in (
        "mysql_host",
        "mysql_port",
        "mysql_database",
        "mysql_user",
        "mysql_password",
        "mysql_table_name",
        "mysql_skip_table_create",
    ):
        assert legacy in backend.options
    assert backends.load("mysql") is backend


def test_importing_does_not_connect() -> None:
    import pyncette_mysql

    assert pyncette_mysql.backend is backend


BASE = {"mysql_host": "db", "mysql_database": "d", "mysql_user": "u"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mysql_host": None}, "mysql_host"),
        ({"mysql_database": None}, "mysql_database"),
        ({"mysql_user": None}, "mysql_user"),
        ({"mysql_host": ""}, "mysql_host ''"),
        ({"mysql_port": "abc"}, "mysql_port 'abc'"),
        ({"mysql_port": 0}, "mysql_port 0"),
        ({"mysql_port": 70000}, "mysql_port 70000"),
        ({"mysql_port": True}, "mysql_port True"),
        ({"mysql_table_name": "bad-name"}, "mysql_table_name 'bad-name'"),
        ({"mysql_table_name": "x; DROP TABLE y"}, "mysql_table_name 'x; DROP TABLE y'"),
        ({"mysql_table_name": "a" * 65}, "mysql_table_name"),
        ({"mysql_table_name": ""}, "mysql_table_name ''"),
        ({"mysql_table_name": "tâble"}, "mysql_table_name 'tâble'"),
        ({"mysql_table_name": "`t`"}, "mysql_table_name '`t`'"),
        ({"mysql_skip_table_create": "maybe"}, "mysql_skip_table_create 'maybe'"),
        ({"mysql_pool_size": 0}, "mysql_pool_size 0"),
        ({"mysql_pool_min_size": 5, "mysql_pool_size": 2}, "mysql_pool_min_size 5"),
        ({"mysql_connect_timeout": -1}, "mysql_connect_timeout -1"),
        ({"mysql_connect_timeout": "soon"}, "mysql_connect_timeout 'soon'"),
        ({"mysql_ssl": "perhaps"}, "mysql_ssl 'perhaps'"),
        ({"mysql_lock_wait_timeout": 0}, "mysql_lock_wait_timeout 0"),
        ({"mysql_command_timeout": 0}, "mysql_command_timeout 0"),
        ({"mysql_password": 12345}, "mysql_password"),
        ({"mysql_hots": "typo"}, "mysql_hots"),
    ],
)
def test_bad_options_are_refused_naming_the_value(changes: dict[str, Any], expected: str) -> None:
    options = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    with pytest.raises(ConfigurationError) as info:
        backend.open(options)
    assert expected in str(info.value)
    assert "12345" not in str(info.value)


def test_options_from_strings_are_accepted() -> None:
    settings = Settings.parse(
        {
            **BASE,
            "mysql_port": "3307",
            "mysql_skip_table_create": "true",
            "mysql_pool_size": "4",
            "mysql_pool_min_size": "0",
            "mysql_connect_timeout": "2.5",
            "mysql_command_timeout": 4,
            "mysql_ssl": "false",
            "mysql_lock_wait_timeout": "7",
            "mysql_table_name": "My_Tasks_2",
            "mysql_password": SECRET,
        }
    )
    assert (settings.port, settings.skip_table_create, settings.pool_size, settings.pool_min_size) == (3307, True, 4, 0)
    assert (settings.connect_timeout, settings.command_timeout, settings.ssl) == (2.5, 4.0, None)
    assert settings.lock_wait_timeout == 7
    assert settings.table == "My_Tasks_2"
    assert SECRET not in repr(settings)
    assert Settings.parse({**BASE, "mysql_ssl": True}).ssl is not None


def test_none_means_the_default() -> None:
    optional = [name for name in backend.options if name not in BASE]
    settings = Settings.parse({**BASE, **dict.fromkeys(optional)})
    assert settings == Settings.parse(BASE)
    assert (settings.port, settings.table, settings.pool_size, settings.password) == (3306, "pyncette_tasks", 10, "")


def test_server_detection_and_dialect() -> None:
    maria = Server.parse("10.11.19-MariaDB-0+deb12u1")
    assert maria.mariadb
    assert maria.isolation_variable == "tx_isolation"
    assert not maria.row_alias
    assert Server.parse("11.4.2-MariaDB").isolation_variable == "transaction_isolation"
    mysql = Server.parse("8.0.36-0ubuntu0.22.04.1")
    assert not mysql.mariadb
    assert mysql.isolation_variable == "transaction_isolation"
    assert mysql.row_alias
    assert not Server.parse("8.0.18").row_alias
    assert maria.init_command(None) == "SET time_zone = '+00:00', tx_isolation = 'READ-COMMITTED'"
    assert mysql.init_command(3).endswith("innodb_lock_wait_timeout = 3")
    for old in ("10.5.9-MariaDB", "5.7.44"):
        with pytest.raises(ConfigurationError, match="too old"):
            Server.parse(old)
    assert Upsert(mysql).statement("`t`", "`a`", ["(1)"], f"`a` = {Upsert(mysql).new('a')}") == (
        "INSERT INTO `t` (`a`) VALUES (1) AS `incoming` ON DUPLICATE KEY UPDATE `a` = `incoming`.`a`"
    )
    assert Upsert(maria).statement("`t`", "`a`", ["(1)"], f"`a` = {Upsert(maria).new('a')}") == (
        "INSERT INTO `t` (`a`) VALUES (1) ON DUPLICATE KEY UPDATE `a` = VALUES(`a`)"
    )


# --- connecting ----------------------------------------------------------------------------------


async def test_unreachable_server_raises_backend_error_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        async with backend.open({**BASE, "mysql_host": "127.0.0.1", "mysql_port": 1, "mysql_password": SECRET}):
            pass
    assert time.monotonic() - started < 3
    assert "127.0.0.1:1" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.__cause__)


async def test_silent_server_times_out_within_the_connect_timeout() -> None:
    # Accepts TCP connections but never sends the handshake: only the timeout can end the wait.
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            async with backend.open(
                {**BASE, "mysql_host": "127.0.0.1", "mysql_port": port, "mysql_connect_timeout": 1}
            ):
                pass
        assert 0.9 < time.monotonic() - started < 3
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "timed out" in str(info.value)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_purge_of_unreachable_server_raises_backend_error() -> None:
    with pytest.raises(BackendError):
        await backend.purge({**BASE, "mysql_host": "127.0.0.1", "mysql_port": 1})


async def test_unknown_database_is_a_configuration_error(mysql_options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="mysql_database"):
        async with backend.open({**mysql_options, "mysql_database": "no_such_db_" + uuid.uuid4().hex[:8]}):
            pass


async def test_wrong_password_is_a_configuration_error_without_the_password(mysql_options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        async with backend.open({**mysql_options, "mysql_user": "pyncette_nobody", "mysql_password": SECRET}):
            pass
    assert "mysql_password" in str(info.value)
    assert SECRET not in str(info.value)


async def test_session_settings(repository: Repository) -> None:
    assert isinstance(repository, MySQLRepository)
    async with repository._pool.acquire() as conn:
        rows = await query(conn, "SELECT @@session.time_zone, @@session.tx_isolation, @@autocommit")
    assert rows == [("+00:00", "READ-COMMITTED", 1)]


async def test_lock_wait_timeout_option(options: dict[str, Any]) -> None:
    async with backend.open({**options, "mysql_lock_wait_timeout": 7}) as repository:
        assert isinstance(repository, MySQLRepository)
        async with repository._pool.acquire() as conn:
            assert await query(conn, "SELECT @@session.innodb_lock_wait_timeout") == [(7,)]


async def test_pool_size_bounds_connections(options: dict[str, Any]) -> None:
    async with backend.open({**options, "mysql_pool_size": 2, "mysql_pool_min_size": 2}) as repository:
        await repository.register([rec(f"r{i}") for i in range(50)], now=T0, mode=RegisterMode.UPDATE)
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(repository.get, "p", "r1")
        assert len(pool_connection_ids(repository)) == 2


# --- the table -----------------------------------------------------------------------------------


async def test_table_layout(repository: Repository, table: str, raw_connection: Any) -> None:
    (create,) = await query(raw_connection, f"SHOW CREATE TABLE `{table}`")
    ddl = create[1]
    assert "`scheduled_at` datetime(6) NOT NULL" in ddl
    assert "`locked_until` datetime(6) DEFAULT NULL" in ddl
    assert "PRIMARY KEY (`parent`,`name`)" in ddl
    assert f"KEY `{DUE_INDEX}` (`parent`,`scheduled_at`)" in ddl
    assert "ENGINE=InnoDB" in ddl
    assert "CHARSET=utf8mb4" in ddl
    columns = await query(
        raw_connection,
        "SELECT COLUMN_NAME, CHARACTER_MAXIMUM_LENGTH, COLLATION_NAME FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND COLUMN_NAME IN ('parent', 'name')",
    )
    assert sorted(columns) == [("name", 255, "utf8mb4_nopad_bin"), ("parent", 255, "utf8mb4_nopad_bin")]


def test_readme_ddl_matches_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    assert create_table_sql("pyncette_tasks", "utf8mb4_nopad_bin") in text


async def test_names_compare_exactly(repository: Repository) -> None:
    names = ["a", "A", "a ", " a", "á", "a\u0301", "ä", "ss", "ß", "x" * 255, "😀" * 255]
    assert await repository.register([rec(n) for n in names], now=T0, mode=RegisterMode.CREATE) == [True] * len(names)
    for n in names:
        stored = await repository.get("p", n)
        assert stored is not None
        assert stored.name == n
    assert await repository.get("p", "a  ") is None
    assert await repository.get("P", "a") is None
    claimed = await repository.claim("p", now=T0, limit=100, lease_until=T0 + LEASE, token="t")
    assert sorted(r.name for r in claimed) == sorted(names)
    page, _ = await repository.list_page("p", limit=100, continuation=None)
    assert sorted(r.name for r in page) == sorted(names)


async def test_too_long_names_are_refused(repository: Repository) -> None:
    with pytest.raises(ConfigurationError, match="255"):
        await repository.register([rec("x" * 256)], now=T0, mode=RegisterMode.UPDATE)
    with pytest.raises(ConfigurationError, match="255"):
        await repository.register([rec("a", parent="p" * 256)], now=T0, mode=RegisterMode.UPDATE)


async def test_times_are_stored_as_utc(repository: Repository, table: str, raw_connection: Any) -> None:
    plus_two = timezone(timedelta(hours=2))
    await repository.register(
        [rec("a", datetime(2030, 6, 1, 14, 0, 0, 500, tzinfo=plus_two))], now=T0, mode=RegisterMode.UPDATE
    )
    rows = await query(raw_connection, f"SELECT scheduled_at FROM `{table}` WHERE name = 'a'")
    assert rows == [(datetime(2030, 6, 1, 12, 0, 0, 500),)]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert stored.scheduled_at == datetime(2030, 6, 1, 12, 0, 0, 500, tzinfo=timezone.utc)


async def test_opening_twice_is_idempotent(options: dict[str, Any]) -> None:
    async with backend.open(options) as first:
        await first.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    async with backend.open(options) as second:
        assert await second.get("p", "a") is not None


async def test_concurrent_startup_creates_the_table_once(options: dict[str, Any]) -> None:
    async def start() -> None:
        async with backend.open(options) as repo:
            await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)


async def test_skip_table_create_with_missing_table(options: dict[str, Any], table: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        async with backend.open({**options, "mysql_skip_table_create": True}):
            pass
    assert table in str(info.value)
    assert "mysql_skip_table_create" in str(info.value)


async def test_skip_table_create_uses_a_table_made_from_the_readme_ddl(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, create_table_sql(table, "utf8mb4_bin"))
    async with backend.open({**options, "mysql_skip_table_create": True}) as repository:
        assert await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]
        assert [r.name for r in await repository.claim("p", now=T0, limit=5, lease_until=T0 + LEASE, token="t")] == [
            "a"
        ]


async def test_incompatible_existing_table_is_reported(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, f"CREATE TABLE `{table}` (partition_id VARCHAR(64), task_id VARCHAR(64))")
    with pytest.raises(ConfigurationError) as info:
        async with backend.open(options):
            pass
    assert table in str(info.value)
    assert "scheduled_at" in str(info.value)


async def test_purge_drops_the_table(mysql_options: dict[str, Any], raw_connection: Any) -> None:
    name = unique_table()
    options = {**mysql_options, "mysql_table_name": name}
    async with backend.open(options):
        pass
    assert await query(raw_connection, f"SHOW TABLES LIKE '{name}'") == [(name,)]
    await backend.purge(options)
    assert await query(raw_connection, f"SHOW TABLES LIKE '{name}'") == []
    await backend.purge(options)  # idempotent


async def test_1x_style_factory_call(options: dict[str, Any]) -> None:
    async with mysql_repository(**options) as repository:
        assert await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]


# --- batches -------------------------------------------------------------------------------------


async def test_register_with_repeated_keys_in_one_batch(repository: Repository) -> None:
    batch = [rec("a", T0 + timedelta(hours=1), '{"v": 1}'), rec("a", T0, '{"v": 2}'), rec("b")]
    assert await repository.register(batch, now=T0, mode=RegisterMode.CREATE) == [True, False, True]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert stored.spec == '{"v": 1}'
    assert await repository.register(batch, now=T0, mode=RegisterMode.UPDATE) == [True, True, True]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert (stored.spec, stored.scheduled_at) == ('{"v": 2}', T0)
    force = [rec("c", T0, '"x"'), rec("c", T0 + timedelta(days=1), '"y"')]
    assert await repository.register(force, now=T0, mode=RegisterMode.FORCE) == [True, True]
    stored = await repository.get("p", "c")
    assert stored is not None
    assert (stored.spec, stored.scheduled_at) == ('"y"', T0 + timedelta(days=1))


async def test_commit_and_unlock_with_repeats_and_many_parents(repository: Repository) -> None:
    parents = [f"parent-{i}" for i in range(40)]  # more than one key-lookup statement's worth
    await repository.register([rec(n, parent=p) for p in parents for n in ("a", "b")], now=T0, mode=RegisterMode.UPDATE)
    tokens = {}
    for p in parents:
        claimed = await repository.claim(p, now=T0, limit=10, lease_until=T0 + LEASE, token=f"tok-{p}")
        assert len(claimed) == 2
        tokens[p] = f"tok-{p}"
    completions = []
    for i, p in enumerate(parents):
        completions.append(Completion(p, "a", tokens[p], None if i % 2 else T0 + timedelta(hours=1)))
        completions.append(Completion(p, "a", tokens[p], T0))  # repeat: the lease is gone by then
    completions.append(Completion("parent-0", "b", "wrong", None))
    results = await repository.commit(completions)
    assert results == [True, False] * len(parents) + [False]
    for i, p in enumerate(parents):
        stored = await repository.get(p, "a")
        if i % 2:
            assert stored is None
        else:
            assert stored is not None
            assert stored.locked_by is None
            assert stored.scheduled_at == T0 + timedelta(hours=1)
    leases = [Lease(p, "b", tokens[p]) for p in parents] + [Lease("parent-1", "b", tokens["parent-1"])]
    assert await repository.unlock(leases) == [True] * len(parents) + [False]
    stored = await repository.get("parent-3", "b")
    assert stored is not None
    assert (stored.locked_by, stored.locked_until) == (None, None)


async def test_claim_limit_zero_and_unknown_parent(repository: Repository) -> None:
    await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
    assert await repository.claim("p", now=T0, limit=0, lease_until=T0 + LEASE, token="t") == []
    assert await repository.claim("nope", now=T0, limit=5, lease_until=T0 + LEASE, token="t") == []
    assert await repository.commit([]) == []
    assert await repository.unlock([]) == []
    assert await repository.register([], now=T0, mode=RegisterMode.CREATE) == []


async def test_extend_to_the_same_expiry_still_counts(repository: Repository) -> None:
    await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
    await repository.claim("p", now=T0, limit=1, lease_until=T0 + LEASE, token="t")
    assert await repository.extend(Lease("p", "a", "t"), lease_until=T0 + LEASE) is True
    assert await repository.extend(Lease("p", "a", "x"), lease_until=T0 + LEASE) is False


async def test_bulk_register_claim_commit(repository: Repository) -> None:
    count = 2500  # more than one transaction's worth
    records = [
        rec(f"r{i:05d}", T0 - timedelta(seconds=i % 100), spec='{"payload": "' + "x" * 100 + '"}') for i in range(count)
    ]
    assert await repository.register(records, now=T0, mode=RegisterMode.CREATE) == [True] * count
    assert await repository.register(records, now=T0, mode=RegisterMode.CREATE) == [False] * count
    claimed = await repository.claim("p", now=T0, limit=count, lease_until=T0 + LEASE, token="t")
    assert len(claimed) == count
    assert [r.scheduled_at for r in claimed] == sorted(r.scheduled_at for r in claimed)
    results = await repository.commit([Completion("p", r.name, "t", T0 + timedelta(hours=1)) for r in claimed])
    assert results == [True] * count
    assert await repository.claim("p", now=T0, limit=10, lease_until=T0 + LEASE, token="t2") == []


# --- failures and concurrency --------------------------------------------------------------------


async def test_killed_connections_are_survived(options: dict[str, Any], raw_connection: Any) -> None:
    async with backend.open({**options, "mysql_pool_size": 3, "mysql_pool_min_size": 3}) as repository:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        killed = pool_connection_ids(repository)
        assert len(killed) == 3
        for thread_id in killed:
            await query(raw_connection, f"KILL {thread_id}")
        failures = 0
        for _ in range(5):
            try:
                stored = await repository.get("p", "a")
                break
            except BackendError:
                failures += 1
        else:
            pytest.fail("the repository did not recover")
        assert failures <= 3
        assert stored is not None
        claimed = await repository.claim("p", now=T0, limit=5, lease_until=T0 + LEASE, token="t")
        assert await repository.commit([Completion("p", "a", "t", T0 + timedelta(hours=1))]) == [True]
        assert [r.name for r in claimed] == ["a"]
        assert not set(killed) & set(pool_connection_ids(repository))


async def test_connection_killed_mid_call_raises_backend_error(
    options: dict[str, Any], raw_connection: Any, table: str
) -> None:
    async with backend.open({**options, "mysql_pool_size": 1}) as repository:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        await repository.claim("p", now=T0, limit=1, lease_until=T0 + LEASE, token="t")
        (own,) = pool_connection_ids(repository)
        await query(raw_connection, "START TRANSACTION")
        await query(raw_connection, f"SELECT * FROM `{table}` WHERE parent = 'p' AND name = 'a' FOR UPDATE")
        pending = asyncio.ensure_future(repository.commit([Completion("p", "a", "t", None)]))
        await asyncio.sleep(0.3)  # the commit now waits for the row lock
        assert not pending.done()
        await query(raw_connection, f"KILL {own}")
        with pytest.raises(BackendError):
            await pending
        await query(raw_connection, "ROLLBACK")
        assert await repository.commit([Completion("p", "a", "t", None)]) == [True]
        assert await repository.get("p", "a") is None


async def test_lock_wait_timeout_is_retried_then_raised(
    options: dict[str, Any], raw_connection: Any, table: str
) -> None:
    async with backend.open({**options, "mysql_lock_wait_timeout": 1}) as repository:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        await repository.claim("p", now=T0, limit=1, lease_until=T0 + LEASE, token="t")
        await query(raw_connection, "START TRANSACTION")
        await query(raw_connection, f"SELECT * FROM `{table}` WHERE parent = 'p' AND name = 'a' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(BackendError, match="1205"):
            await repository.unlock([Lease("p", "a", "t")])
        assert time.monotonic() - started > 3  # several attempts, each waiting a second
        # Released during the retries: the call succeeds.
        pending = asyncio.ensure_future(repository.unlock([Lease("p", "a", "t")]))
        await asyncio.sleep(1.5)
        await query(raw_connection, "ROLLBACK")
        assert await pending == [True]


async def test_command_timeout_bounds_a_blocked_call(options: dict[str, Any], raw_connection: Any, table: str) -> None:
    async with backend.open({**options, "mysql_command_timeout": 1, "mysql_pool_size": 1}) as repository:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        await repository.claim("p", now=T0, limit=1, lease_until=T0 + LEASE, token="t")
        (blocked,) = pool_connection_ids(repository)
        await query(raw_connection, "START TRANSACTION")
        await query(raw_connection, f"SELECT * FROM `{table}` WHERE parent = 'p' AND name = 'a' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(BackendError, match="timed out after 1 s"):
            await repository.commit([Completion("p", "a", "t", None)])
        assert time.monotonic() - started < 2
        await query(raw_connection, "ROLLBACK")
        assert await repository.commit([Completion("p", "a", "t", None)]) == [True]
        assert blocked not in pool_connection_ids(repository)  # the timed-out connection was dropped


async def test_deadlock_is_retried(
    repository: Repository, raw_connection: Any, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    await repository.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
    await repository.claim("p", now=T0, limit=2, lease_until=T0 + LEASE, token="t")
    await query(raw_connection, "START TRANSACTION")
    # Many changed rows make this transaction the heavier one, so InnoDB picks the repository's as the victim.
    ballast = ", ".join(f"('ballast', 'n{i}', '2030-01-01')" for i in range(200))
    await query(raw_connection, f"INSERT INTO `{table}` (parent, name, scheduled_at) VALUES {ballast}")
    await query(raw_connection, f"SELECT * FROM `{table}` WHERE parent = 'p' AND name = 'b' FOR UPDATE")
    # The commit locks "a", then waits for "b"; taking "a" here closes the cycle.
    with caplog.at_level("DEBUG", logger="pyncette.mysql"):
        pending = asyncio.ensure_future(
            repository.commit([Completion("p", "a", "t", T0 + LEASE), Completion("p", "b", "t", T0 + LEASE)])
        )
        await asyncio.sleep(0.3)
        await query(raw_connection, f"SELECT * FROM `{table}` WHERE parent = 'p' AND name = 'a' FOR UPDATE")
        await asyncio.sleep(0.1)
        await query(raw_connection, "ROLLBACK")
        assert await pending == [True, True]
    assert any("1213" in message and "retrying" in message for message in caplog.messages)


async def test_four_competing_instances(options: dict[str, Any]) -> None:
    count = 1200
    names = [f"r{i:04d}" for i in range(count)]
    async with backend.open(options) as setup:
        await setup.register([rec(n) for n in names], now=T0, mode=RegisterMode.CREATE)
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    async def instance(index: int) -> None:
        async with backend.open({**options, "mysql_pool_size": 4}) as repo:

            async def worker(w: int) -> None:
                token = f"i{index}w{w}"
                while True:
                    try:
                        batch = await repo.claim("p", now=T0, limit=25, lease_until=T0 + LEASE, token=token)
                        if not batch:
                            return
                        for r in batch:
                            claimed.setdefault(r.name, []).append(token)
                        # Contend on the claimed rows and on others: UPDATE-mode registration, then commit.
                        others = random.sample(names, 10)
                        await repo.register([rec(n, T0 + LEASE) for n in others], now=T0, mode=RegisterMode.UPDATE)
                        done = [Completion("p", r.name, token, T0 + timedelta(days=1)) for r in batch]
                        assert await repo.commit(list(reversed(done))) == [True] * len(done)
                    except BaseException as exc:
                        errors.append(exc)
                        raise

            async with anyio.create_task_group() as tg:
                for w in range(3):
                    tg.start_soon(worker, w)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(instance, i)
    assert errors == []
    assert sorted(claimed) == names
    assert all(len(tokens) == 1 for tokens in claimed.values())


def test_no_password_in_settings_repr() -> None:
    settings = Settings.parse({**BASE, "mysql_password": SECRET})
    assert SECRET not in repr(settings)
    assert re.search("password", repr(settings)) is None
