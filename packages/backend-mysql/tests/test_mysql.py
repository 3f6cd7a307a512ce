"""MySQL / MariaDB-specific behaviour: options, connecting, table layout, exact names, corrupt rows, recovery,
locking."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiomysql
import anyio
import pytest

from pyncette import backends
from pyncette.abc import PARKED_AT, Completion, Lease, PauseRule, Record, RegisterMode, Repository
from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Option, Settings
from pyncette_mysql import MySQLBackend, MySQLRepository, backend, mysql_repository
from pyncette_mysql._repository import run
from pyncette_mysql._schema import (
    DUE_INDEX,
    Server,
    Upsert,
    add_paused_sql,
    create_pauses_sql,
    create_table_sql,
    pauses_table_name,
    prefix_range,
)

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)
SECRET = "s3cret-Passw0rd"
README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "backends" / "mysql.md"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unique_table() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def settings(options: dict[str, Any]) -> Settings:
    return backend.settings(options)


def open_repository(options: dict[str, Any]) -> contextlib.AbstractAsyncContextManager[Repository]:
    return backend.open(backend.settings(options))


@pytest.fixture
async def table(mysql_options: dict[str, Any]) -> AsyncIterator[str]:
    """A fresh table name, dropped after the test."""
    name = unique_table()
    yield name
    await backend.purge(settings({**mysql_options, "mysql_table_name": name}))


@pytest.fixture
def options(mysql_options: dict[str, Any], table: str) -> dict[str, Any]:
    return {**mysql_options, "mysql_table_name": table}


@pytest.fixture
async def repository(options: dict[str, Any]) -> AsyncIterator[Repository]:
    async with open_repository(options) as repo:
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
    assert (caps.persistent, caps.coordinated, caps.asyncio_only, caps.control) == (True, True, True, True)
    assert backends.load("mysql") is backend


def test_option_schema() -> None:
    """Every 1.x option name is kept; the password is secret and the table name isolates."""
    assert all(isinstance(option, Option) for option in backend.options.values())
    assert set(backend.options) == {
        "mysql_host",
        "mysql_port",
        "mysql_database",
        "mysql_user",
        "mysql_password",
        "mysql_table_name",
        "mysql_skip_table_create",
        "mysql_pool_size",
        "mysql_pool_min_size",
        "mysql_connect_timeout",
        "mysql_command_timeout",
        "mysql_ssl",
        "mysql_lock_wait_timeout",
    }
    assert [name for name, option in backend.options.items() if option.secret] == ["mysql_password"]
    assert [name for name, option in backend.options.items() if option.isolates] == ["mysql_table_name"]
    assert [name for name, option in backend.options.items() if option.required] == [
        "mysql_host",
        "mysql_database",
        "mysql_user",
    ]
    described = {option["name"]: option for option in (o.describe() for o in backend.options.values())}
    assert described["mysql_password"]["default"] is None  # a secret's default is not shown
    assert described["mysql_connect_timeout"]["type"] == "seconds"
    assert backend.isolated_options("tabc123", Path("/unused")) == {"mysql_table_name": "tabc123"}


def test_importing_does_not_connect() -> None:
    import pyncette_mysql

    assert pyncette_mysql.backend is backend


BASE = {"mysql_host": "db", "mysql_database": "d", "mysql_user": "u"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mysql_host": None}, "missing option mysql_host"),
        ({"mysql_database": None}, "missing option mysql_database"),
        ({"mysql_user": None}, "missing option mysql_user"),
        ({"mysql_host": ""}, "invalid mysql_host ''"),
        ({"mysql_port": "abc"}, "invalid mysql_port 'abc'"),
        ({"mysql_port": 0}, "invalid mysql_port 0"),
        ({"mysql_port": 70000}, "invalid mysql_port 70000"),
        ({"mysql_port": True}, "invalid mysql_port True"),
        ({"mysql_port": 3306.5}, "invalid mysql_port 3306.5"),
        ({"mysql_table_name": "bad-name"}, "invalid mysql_table_name 'bad-name'"),
        ({"mysql_table_name": "x; DROP TABLE y"}, "invalid mysql_table_name 'x; DROP TABLE y'"),
        ({"mysql_table_name": "a" * 65}, "invalid mysql_table_name"),
        ({"mysql_table_name": ""}, "invalid mysql_table_name ''"),
        ({"mysql_table_name": "tâble"}, "invalid mysql_table_name 'tâble'"),
        ({"mysql_table_name": "`t`"}, "invalid mysql_table_name '`t`'"),
        ({"mysql_skip_table_create": "maybe"}, "invalid mysql_skip_table_create 'maybe'"),
        ({"mysql_skip_table_create": 1}, "invalid mysql_skip_table_create 1"),
        ({"mysql_pool_size": 0}, "invalid mysql_pool_size 0"),
        ({"mysql_pool_min_size": 5, "mysql_pool_size": 2}, "invalid mysql_pool_min_size 5"),
        ({"mysql_pool_min_size": "3", "mysql_pool_size": "2"}, "must not exceed mysql_pool_size (2)"),
        ({"mysql_connect_timeout": -1}, "invalid mysql_connect_timeout -1"),
        ({"mysql_connect_timeout": "soon"}, "invalid mysql_connect_timeout 'soon'"),
        ({"mysql_connect_timeout": timedelta(0)}, "invalid mysql_connect_timeout"),
        ({"mysql_command_timeout": 0}, "invalid mysql_command_timeout 0"),
        ({"mysql_command_timeout": float("inf")}, "invalid mysql_command_timeout inf"),
        ({"mysql_ssl": "perhaps"}, "invalid mysql_ssl 'perhaps'"),
        ({"mysql_ssl": 1}, "invalid mysql_ssl 1"),
        ({"mysql_lock_wait_timeout": 0}, "invalid mysql_lock_wait_timeout 0"),
        ({"mysql_lock_wait_timeout": "7.5"}, "invalid mysql_lock_wait_timeout '7.5'"),
        ({"mysql_password": 12345}, "invalid mysql_password ***"),
        ({"mysql_hots": "typo"}, "unknown mysql option(s) mysql_hots"),
    ],
)
def test_bad_options_are_refused_naming_the_value(changes: dict[str, Any], expected: str) -> None:
    options = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    with pytest.raises(ConfigurationError) as info:
        backend.settings(options)
    assert expected in str(info.value)
    assert "12345" not in str(info.value)
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        mysql_repository(**options)  # the 1.x call validates the same way


def test_options_from_text_are_accepted() -> None:
    """Every option can be given as text (command line, environment variables)."""
    parsed = settings(
        {
            **BASE,
            "mysql_port": "3307",
            "mysql_skip_table_create": "yes",
            "mysql_pool_size": "4",
            "mysql_pool_min_size": "0",
            "mysql_connect_timeout": "2.5",
            "mysql_command_timeout": "4",
            "mysql_ssl": "off",
            "mysql_lock_wait_timeout": "7",
            "mysql_table_name": "My_Tasks_2",
            "mysql_password": SECRET,
        }
    )
    assert dict(parsed) == {
        **BASE,
        "mysql_port": 3307,
        "mysql_skip_table_create": True,
        "mysql_pool_size": 4,
        "mysql_pool_min_size": 0,
        "mysql_connect_timeout": 2.5,
        "mysql_command_timeout": 4.0,
        "mysql_ssl": False,
        "mysql_lock_wait_timeout": 7,
        "mysql_table_name": "My_Tasks_2",
        "mysql_password": SECRET,
    }
    assert SECRET not in repr(parsed)
    assert SECRET in parsed.secrets
    assert settings({**BASE, "mysql_ssl": "true"})["mysql_ssl"] is True


def test_timeouts_accept_timedeltas_without_an_upper_limit() -> None:
    parsed = settings(
        {**BASE, "mysql_connect_timeout": timedelta(milliseconds=1500), "mysql_command_timeout": timedelta(days=400)}
    )
    assert (parsed["mysql_connect_timeout"], parsed["mysql_command_timeout"]) == (1.5, 400 * 86400.0)


def test_ssl_accepts_a_context() -> None:
    context = ssl.create_default_context()
    assert settings({**BASE, "mysql_ssl": context})["mysql_ssl"] is context


def test_none_means_the_default() -> None:
    optional = [name for name in backend.options if name not in BASE]
    parsed = settings({**BASE, **dict.fromkeys(optional)})
    assert dict(parsed) == dict(settings(BASE))
    assert (parsed["mysql_port"], parsed["mysql_table_name"], parsed["mysql_pool_size"]) == (3306, "pyncette_tasks", 10)
    assert (parsed["mysql_password"], parsed["mysql_ssl"], parsed["mysql_lock_wait_timeout"]) == ("", False, None)
    assert (parsed["mysql_connect_timeout"], parsed["mysql_command_timeout"]) == (5.0, 30.0)


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
    assert maria.init_command(None) == (
        "SET time_zone = '+00:00', tx_isolation = 'READ-COMMITTED', "
        "sql_mode = CONCAT_WS(',', NULLIF(@@session.sql_mode, ''), 'STRICT_ALL_TABLES')"
    )
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


def full_text(exc: BaseException) -> str:
    """Everything an exception can show: message, repr and the traceback with its causes."""
    return f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}"


async def test_unreachable_server_raises_backend_error_quickly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        async with open_repository({**BASE, "mysql_host": "127.0.0.1", "mysql_port": 1, "mysql_password": SECRET}):
            pass
    assert time.monotonic() - started < 3
    assert "127.0.0.1:1" in str(info.value)
    assert SECRET not in full_text(info.value)
    assert info.value.__cause__ is not None
    assert SECRET not in full_text(info.value.__cause__)
    assert SECRET not in caplog.text


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
            async with open_repository(
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
        await backend.purge(settings({**BASE, "mysql_host": "127.0.0.1", "mysql_port": 1}))


async def test_unknown_database_is_a_configuration_error(mysql_options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="mysql_database"):
        async with open_repository({**mysql_options, "mysql_database": "no_such_db_" + uuid.uuid4().hex[:8]}):
            pass


async def test_wrong_password_is_a_configuration_error_without_the_password(mysql_options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        async with open_repository({**mysql_options, "mysql_user": "pyncette_nobody", "mysql_password": SECRET}):
            pass
    assert "mysql_password" in str(info.value)
    assert SECRET not in full_text(info.value)


async def test_non_latin1_password_reaches_the_server(mysql_options: dict[str, Any]) -> None:
    """aiomysql cannot encode it itself; it is sent as UTF-8 and refused by the server like any wrong one."""
    password = "pässwörd-€-" + SECRET
    with pytest.raises(ConfigurationError) as info:
        async with open_repository({**mysql_options, "mysql_user": "pyncette_nobody", "mysql_password": password}):
            pass
    assert "access denied" in str(info.value)
    assert password not in full_text(info.value)
    assert SECRET not in full_text(info.value)


async def test_ssl_without_tls_on_the_server_is_refused(options: dict[str, Any], raw_connection: Any) -> None:
    """aiomysql would quietly connect in plain text; asking for TLS must not end up without it."""
    ((_, have_ssl),) = await query(raw_connection, "SHOW VARIABLES LIKE 'have_ssl'")
    if have_ssl == "YES":
        pytest.skip("the test server offers TLS")
    with pytest.raises(ConfigurationError, match=r"mysql_ssl is set but the MySQL server at .* does not offer TLS"):
        async with open_repository({**options, "mysql_ssl": True}):
            pass


async def test_session_settings(repository: Repository) -> None:
    assert isinstance(repository, MySQLRepository)
    async with repository._pool.acquire() as conn:
        rows = await query(conn, "SELECT @@session.time_zone, @@session.tx_isolation, @@autocommit")
        ((mode,),) = await query(conn, "SELECT @@session.sql_mode")
    assert rows == [("+00:00", "READ-COMMITTED", 1)]
    assert "STRICT_ALL_TABLES" in mode.split(",")


async def test_lock_wait_timeout_option(options: dict[str, Any]) -> None:
    async with open_repository({**options, "mysql_lock_wait_timeout": 7}) as repository:
        assert isinstance(repository, MySQLRepository)
        async with repository._pool.acquire() as conn:
            assert await query(conn, "SELECT @@session.innodb_lock_wait_timeout") == [(7,)]


async def test_pool_size_bounds_connections(options: dict[str, Any]) -> None:
    async with open_repository({**options, "mysql_pool_size": 2, "mysql_pool_min_size": 2}) as repository:
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
    assert "`paused` tinyint(4) NOT NULL DEFAULT 0" in ddl
    assert f"KEY `{DUE_INDEX}` (`parent`,`paused`,`scheduled_at`)" in ddl
    assert "ENGINE=InnoDB" in ddl
    assert "CHARSET=utf8mb4" in ddl
    (create,) = await query(raw_connection, f"SHOW CREATE TABLE `{table}_pauses`")
    assert "PRIMARY KEY (`parent`,`kind`,`match`)" in create[1]
    columns = await query(
        raw_connection,
        "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_MAXIMUM_LENGTH, COLLATION_NAME FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('{table}', '{table}_pauses') "
        "AND COLUMN_NAME IN ('parent', 'name', 'match')",
    )
    assert sorted(columns) == [
        (table, "name", 255, "utf8mb4_nopad_bin"),
        (table, "parent", 255, "utf8mb4_nopad_bin"),
        (f"{table}_pauses", "match", 255, "utf8mb4_nopad_bin"),
        (f"{table}_pauses", "parent", 255, "utf8mb4_nopad_bin"),
    ]


def test_readme_ddl_matches_the_code() -> None:
    for text in (README.read_text(encoding="utf-8"), DOCS.read_text(encoding="utf-8")):
        assert create_table_sql("pyncette_tasks", "utf8mb4_nopad_bin") in text
        assert create_pauses_sql("pyncette_tasks", "utf8mb4_nopad_bin") in text


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
    async with open_repository(options) as first:
        await first.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    async with open_repository(options) as second:
        assert await second.get("p", "a") is not None


async def test_concurrent_startup_creates_the_table_once(options: dict[str, Any]) -> None:
    async def start() -> None:
        async with open_repository(options) as repo:
            await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)


async def test_skip_table_create_with_missing_table(options: dict[str, Any], table: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        async with open_repository({**options, "mysql_skip_table_create": True}):
            pass
    assert table in str(info.value)
    assert "mysql_skip_table_create" in str(info.value)


async def test_skip_table_create_uses_a_table_made_from_the_readme_ddl(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, create_table_sql(table, "utf8mb4_bin"))
    await query(raw_connection, create_pauses_sql(table, "utf8mb4_bin"))
    async with open_repository({**options, "mysql_skip_table_create": True}) as repository:
        assert await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]
        assert [r.name for r in await repository.claim("p", now=T0, limit=5, lease_until=T0 + LEASE, token="t")] == [
            "a"
        ]


async def test_incompatible_existing_table_is_reported(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, f"CREATE TABLE `{table}` (partition_id VARCHAR(64), task_id VARCHAR(64))")
    with pytest.raises(ConfigurationError) as info:
        async with open_repository(options):
            pass
    assert table in str(info.value)
    assert "scheduled_at" in str(info.value)


async def test_purge_drops_the_table(mysql_options: dict[str, Any], raw_connection: Any) -> None:
    name = unique_table()
    options = {**mysql_options, "mysql_table_name": name}
    async with open_repository(options):
        pass
    assert await query(raw_connection, f"SHOW TABLES LIKE '{name}%'") == [(name,), (f"{name}_pauses",)]
    await backend.purge(settings(options))
    assert await query(raw_connection, f"SHOW TABLES LIKE '{name}%'") == []
    await backend.purge(settings(options))  # idempotent


async def test_1x_style_factory_call(options: dict[str, Any]) -> None:
    async with mysql_repository(**options) as repository:
        assert await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]


# --- values the server refuses, corrupt rows --------------------------------------------------------


async def test_values_the_server_refuses_are_configuration_errors(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    """Strict mode makes the server refuse what does not fit (never truncate it); retrying cannot help."""
    await query(
        raw_connection, create_table_sql(table, "utf8mb4_bin").replace("`name` VARCHAR(255)", "`name` VARCHAR(8)")
    )
    await query(raw_connection, create_pauses_sql(table, "utf8mb4_bin"))
    async with open_repository({**options, "mysql_skip_table_create": True}) as repository:
        for mode in (RegisterMode.CREATE, RegisterMode.UPDATE, RegisterMode.FORCE):
            with pytest.raises(ConfigurationError, match="1406"):
                await repository.register([rec("much-too-long")], now=T0, mode=mode)
        with pytest.raises(ConfigurationError, match="UnicodeEncodeError"):
            await repository.register([rec("x\ud800")], now=T0, mode=RegisterMode.UPDATE)
        assert await repository.register([rec("fits")], now=T0, mode=RegisterMode.UPDATE) == [True]
        assert await query(raw_connection, f"SELECT name FROM `{table}`") == [("fits",)]


async def test_parked_at_round_trips(repository: Repository) -> None:
    await repository.register([rec("a", PARKED_AT)], now=T0, mode=RegisterMode.UPDATE)
    stored = await repository.get("p", "a")
    assert stored is not None
    assert (stored.scheduled_at, stored.corrupt) == (PARKED_AT, None)
    assert await repository.claim("p", now=PARKED_AT - timedelta(seconds=1), limit=5, lease_until=T0, token="t") == []
    (claimed,) = await repository.claim("p", now=PARKED_AT, limit=5, lease_until=PARKED_AT, token="t")
    assert (claimed.scheduled_at, claimed.locked_until) == (PARKED_AT, PARKED_AT)
    assert await repository.extend(Lease("p", "a", "t"), lease_until=PARKED_AT) is True
    assert await repository.commit([Completion("p", "a", "t", PARKED_AT)]) == [True]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert (stored.scheduled_at, stored.locked_until, stored.locked_by) == (PARKED_AT, None, None)


async def stored_times(conn: Any, table: str, name: str) -> tuple[str, str | None]:
    ((scheduled_at, locked_until),) = await query(
        conn, f"SELECT CAST(scheduled_at AS CHAR), CAST(locked_until AS CHAR) FROM `{table}` WHERE name = '{name}'"
    )
    return scheduled_at, locked_until


async def test_corrupt_row_is_claimed_with_the_others_and_parked(
    repository: Repository, table: str, raw_connection: Any
) -> None:
    records = [rec("early", T0 - timedelta(hours=2)), rec("bad", T0 - timedelta(hours=1), '{"v": 7}'), rec("late")]
    await repository.register(records, now=T0, mode=RegisterMode.UPDATE)
    await repository.corrupt("p", "bad")
    assert (await stored_times(raw_connection, table, "bad"))[0].startswith("0000-00-00 00:00:00")

    stored = await repository.get("p", "bad")
    assert stored is not None
    assert stored.corrupt is not None and "scheduled_at" in stored.corrupt and "0000-00-00" in stored.corrupt
    assert (stored.spec, stored.scheduled_at, stored.locked_until) == ('{"v": 7}', PARKED_AT, None)
    page, _ = await repository.list_page("p", limit=10, continuation=None)
    assert [(r.name, r.corrupt is not None) for r in page] == [("bad", True), ("early", False), ("late", False)]

    claimed = await repository.claim("p", now=T0, limit=10, lease_until=T0 + LEASE, token="t")
    assert [r.name for r in claimed] == ["bad", "early", "late"]  # a zero date sorts first
    bad = claimed[0]
    assert bad.corrupt is not None
    assert (bad.spec, bad.scheduled_at, bad.locked_until, bad.locked_by) == ('{"v": 7}', PARKED_AT, T0 + LEASE, "t")
    assert all(r.corrupt is None and r.locked_by == "t" for r in claimed[1:])

    # What the runtime does with it: park it, which repairs the row.
    assert await repository.commit([Completion("p", "bad", "t", PARKED_AT)]) == [True]
    assert await stored_times(raw_connection, table, "bad") == ("9999-12-31 23:59:59.000000", None)
    stored = await repository.get("p", "bad")
    assert stored is not None
    assert (stored.corrupt, stored.scheduled_at, stored.locked_by, stored.spec) == (None, PARKED_AT, None, '{"v": 7}')
    later = T0 + timedelta(days=3650)
    assert [r.name for r in await repository.claim("p", now=later, limit=10, lease_until=later, token="u")] == [
        "early",
        "late",
    ]


async def test_register_treats_a_corrupt_row_as_missing(repository: Repository) -> None:
    await repository.register([rec("a", spec='"old"')], now=T0, mode=RegisterMode.UPDATE)
    await repository.claim("p", now=T0, limit=1, lease_until=T0 + LEASE, token="t")
    await repository.corrupt("p", "a")

    assert await repository.register([rec("a", spec='"create"')], now=T0, mode=RegisterMode.CREATE) == [False]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert (stored.corrupt is not None, stored.spec, stored.locked_by) == (True, '"old"', "t")

    # Leased until T0 + LEASE, so a readable row would be left alone; a corrupt one is overwritten.
    at = T0 + timedelta(hours=1)
    assert await repository.register([rec("a", at, '"update"')], now=T0, mode=RegisterMode.UPDATE) == [True]
    stored = await repository.get("p", "a")
    assert stored == Record("p", "a", '"update"', at)
    assert await repository.commit([Completion("p", "a", "t", None)]) == [False]  # that lease is gone

    await repository.corrupt("p", "a")
    assert await repository.register([rec("a", T0, '"force"')], now=T0, mode=RegisterMode.FORCE) == [True]
    assert await repository.get("p", "a") == Record("p", "a", '"force"', T0)


async def test_other_unreadable_times_are_corrupt_too(repository: Repository, table: str, raw_connection: Any) -> None:
    """A zero lease expiry, and an impossible date a server with ALLOW_INVALID_DATES keeps."""
    await repository.register([rec("lease"), rec("date")], now=T0, mode=RegisterMode.UPDATE)
    await query(raw_connection, "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
    await query(
        raw_connection, f"UPDATE `{table}` SET locked_until = '0000-00-00', locked_by = 'x' WHERE name = 'lease'"
    )
    await query(raw_connection, f"UPDATE `{table}` SET scheduled_at = '2029-02-31 10:00:00' WHERE name = 'date'")

    lease = await repository.get("p", "lease")
    assert lease is not None
    assert lease.corrupt is not None and "locked_until" in lease.corrupt
    assert (lease.scheduled_at, lease.locked_until, lease.locked_by) == (T0, None, "x")
    date = await repository.get("p", "date")
    assert date is not None
    assert date.corrupt is not None and "2029-02-31" in date.corrupt
    assert date.scheduled_at == PARKED_AT

    claimed = {r.name: r for r in await repository.claim("p", now=T0, limit=10, lease_until=T0 + LEASE, token="t")}
    assert claimed["lease"].corrupt is None  # the claim replaced the bad expiry with its own lease
    assert claimed["date"].corrupt is not None
    assert await repository.commit([Completion("p", n, "t", PARKED_AT) for n in ("date", "lease")]) == [True, True]
    assert all(r.corrupt is None for r in (await repository.list_page("p", limit=10, continuation=None))[0])


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


async def server_connection_ids(conn: Any) -> set[int]:
    return {row[0] for row in await query(conn, "SELECT ID FROM information_schema.PROCESSLIST")}


async def test_kill_connections_hook_cuts_only_the_pool(options: dict[str, Any], raw_connection: Any) -> None:
    """The hook kills the repository's own connections and returns how many; the server's others live on."""
    async with (
        open_repository({**options, "mysql_pool_size": 3, "mysql_pool_min_size": 3}) as repository,
        open_repository(options) as other,
    ):
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        killed = pool_connection_ids(repository)
        bystanders = {*pool_connection_ids(other), raw_connection.thread_id()}
        assert len(killed) == 3
        assert await repository.kill_connections() == 3
        deadline = time.monotonic() + 5
        while set(killed) & (alive := await server_connection_ids(raw_connection)):  # KILL takes effect shortly
            assert time.monotonic() < deadline, "killed connections are still listed"
            await asyncio.sleep(0.05)
        assert bystanders <= alive
        assert await other.get("p", "a") is not None


async def test_killed_connections_are_survived(options: dict[str, Any]) -> None:
    async with open_repository({**options, "mysql_pool_size": 3, "mysql_pool_min_size": 3}) as repository:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        killed = pool_connection_ids(repository)
        assert await repository.kill_connections() == 3
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
    async with open_repository({**options, "mysql_pool_size": 1}) as repository:
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
    async with open_repository({**options, "mysql_lock_wait_timeout": 1}) as repository:
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
    async with open_repository({**options, "mysql_command_timeout": 1, "mysql_pool_size": 1}) as repository:
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
    async with open_repository(options) as setup:
        await setup.register([rec(n) for n in names], now=T0, mode=RegisterMode.CREATE)
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    async def instance(index: int) -> None:
        async with open_repository({**options, "mysql_pool_size": 4}) as repo:

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


# --- upgrading tables made by earlier 2.x versions ------------------------------------------------------


def table_2_0_sql(table: str) -> str:
    """The table as pyncette-mysql 2.0 created it: no state column, no paused column, the old due index."""
    return (
        f"CREATE TABLE `{table}` (\n"
        "  `parent` VARCHAR(255) NOT NULL,\n"
        "  `name` VARCHAR(255) NOT NULL,\n"
        "  `spec` MEDIUMTEXT NULL,\n"
        "  `scheduled_at` DATETIME(6) NOT NULL,\n"
        "  `locked_until` DATETIME(6) NULL,\n"
        "  `locked_by` VARCHAR(255) NULL,\n"
        "  PRIMARY KEY (`parent`, `name`),\n"
        "  KEY `pyncette_due` (`parent`, `scheduled_at`)\n"
        ") ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"
    )


def table_before_pausing_sql(table: str, collation: str = "utf8mb4_nopad_bin") -> str:
    """The table as the 2.x versions with ``state`` but before pausing created it (there was no rule table)."""
    return (
        table_2_0_sql(table)
        .replace("  `locked_by` VARCHAR(255) NULL,\n", "  `locked_by` VARCHAR(255) NULL,\n  `state` MEDIUMTEXT NULL,\n")
        .replace("utf8mb4_nopad_bin", collation)
    )


async def state_columns(raw_connection: Any, table: str) -> list[tuple[Any, ...]]:
    return await query(
        raw_connection,
        "SELECT DATA_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND COLUMN_NAME = 'state'",
    )


async def due_index(raw_connection: Any, table: str) -> list[str]:
    rows = await query(
        raw_connection,
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME = '{table}' AND INDEX_NAME = '{DUE_INDEX}' ORDER BY SEQ_IN_INDEX",
    )
    return [row[0] for row in rows]


async def test_an_existing_table_gains_the_state_column(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, table_2_0_sql(table))
    await query(
        raw_connection,
        f"INSERT INTO `{table}` (`parent`, `name`, `spec`, `scheduled_at`) VALUES ('p', 'old', '{{}}', "
        "'2030-01-01 00:00:00')",
    )
    async with open_repository(options) as repository:
        old = await repository.get("p", "old")
        assert old is not None and (old.state, old.scheduled_at, old.spec) == (None, T0, "{}")
        [claimed] = await repository.claim("p", now=T0, limit=5, lease_until=T0 + LEASE, token="t")
        assert (claimed.name, claimed.state) == ("old", None)
        later = T0 + timedelta(hours=1)
        assert await repository.commit([Completion("p", "old", "t", later, state='{"v": 1}')]) == [True]
    assert await state_columns(raw_connection, table) == [("mediumtext", "YES")]
    assert await due_index(raw_connection, table) == ["parent", "paused", "scheduled_at"]
    async with open_repository(options) as repository:  # the column exists now: opening changes nothing
        stored = await repository.get("p", "old")
        assert stored is not None and (stored.state, stored.scheduled_at) == ('{"v": 1}', later)


async def test_a_table_from_before_pausing_is_upgraded_in_place(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, table_before_pausing_sql(table))
    await query(
        raw_connection,
        f"INSERT INTO `{table}` (`parent`, `name`, `spec`, `scheduled_at`, `locked_until`, `locked_by`, `state`) "
        "VALUES ('p', 'a1', '{}', '2030-01-01 00:00:00', NULL, NULL, '{\"n\": 1}'), "
        "('p', 'a2', NULL, '2030-01-01 00:00:01', '2030-01-01 00:00:30', 'tok', NULL), "
        "('p', 'b1', '{}', '2030-01-01 00:00:02', NULL, NULL, NULL), "
        "('q', 'a1', '{}', '2030-01-01 00:00:00', NULL, NULL, NULL)",
    )
    before = await query(raw_connection, f"SELECT * FROM `{table}` ORDER BY parent, name")
    async with open_repository(options) as repository:
        assert await due_index(raw_connection, table) == ["parent", "paused", "scheduled_at"]
        after = await query(
            raw_connection,
            f"SELECT parent, name, spec, scheduled_at, locked_until, locked_by, state, paused FROM `{table}` "
            "ORDER BY parent, name",
        )
        assert after == [(*row, 0) for row in before]  # old data intact, nothing held
        a2 = await repository.get("p", "a2")
        assert a2 is not None and (a2.locked_by, a2.spec) == ("tok", None)
        assert await repository.pause(PauseRule("p", "a", True, '{"note": "upgrade"}'), now=T0) == 2
        assert await repository.pauses("p") == [PauseRule("p", "a", True, '{"note": "upgrade"}')]
        claimed = await repository.claim("p", now=T0 + LEASE, limit=10, lease_until=T0 + 2 * LEASE, token="t")
        assert [r.name for r in claimed] == ["b1"]
        # The lease taken before the upgrade still works on a held record.
        assert await repository.commit([Completion("p", "a2", "tok", T0 + timedelta(hours=1))]) == [True]
        assert [r.name for r in await repository.claim("q", now=T0, limit=10, lease_until=T0 + LEASE, token="t")] == [
            "a1"
        ]
    async with open_repository(options) as repository:  # reopening: the rule and the held records persist
        claimed = await repository.claim("p", now=T0 + timedelta(days=1), limit=10, lease_until=PARKED_AT, token="u")
        assert [r.name for r in claimed] == ["b1"]
        assert await repository.resume("p", "a", prefix=True, now=T0) is True
        claimed = await repository.claim("p", now=T0 + timedelta(days=1), limit=10, lease_until=PARKED_AT, token="u")
        assert sorted(r.name for r in claimed) == ["a1", "a2"]
        a1 = next(r for r in claimed if r.name == "a1")
        assert (a1.state, a1.spec, a1.scheduled_at) == ('{"n": 1}', "{}", T0)


async def test_concurrent_startup_upgrades_the_table_once(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, table_2_0_sql(table))
    errors: list[BaseException] = []

    async def start() -> None:
        try:
            async with open_repository(options) as repo:
                await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        except Exception as exc:  # collected, to report every failure
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)
    assert errors == []
    assert await due_index(raw_connection, table) == ["parent", "paused", "scheduled_at"]
    assert await state_columns(raw_connection, table) == [("mediumtext", "YES")]


async def test_the_rule_table_takes_the_collation_of_the_task_table(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    """A table made with utf8mb4_bin (PAD SPACE): rules compare like its keys, and a prefix with a trailing space
    still does not hold a shorter name."""
    await query(raw_connection, table_before_pausing_sql(table, "utf8mb4_bin"))
    async with open_repository(options) as repository:
        rows = await query(
            raw_connection,
            "SELECT DISTINCT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME = '{table}_pauses' AND COLLATION_NAME IS NOT NULL",
        )
        assert rows == [("utf8mb4_bin",)]
        names = ["a", "a b", "a\tb", "A b", "ab"]
        await repository.register([rec(n) for n in names], now=T0, mode=RegisterMode.CREATE)
        assert await repository.pause(PauseRule("p", "a ", True), now=T0) == 1
        claimed = await repository.claim("p", now=T0, limit=10, lease_until=T0 + LEASE, token="t")
        assert sorted(r.name for r in claimed) == sorted(["a", "a\tb", "A b", "ab"])


async def test_skip_table_create_with_a_table_lacking_the_state_column(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, table_2_0_sql(table))
    with pytest.raises(ConfigurationError) as info:
        async with open_repository({**options, "mysql_skip_table_create": True}):
            pass
    message = str(info.value)
    assert "'state'" in message and table in message and "ADD COLUMN `state` MEDIUMTEXT NULL" in message
    assert "'paused'" in message and f"'{table}_pauses'" in message and "mysql_skip_table_create" in message
    assert await state_columns(raw_connection, table) == []
    await query(raw_connection, f"ALTER TABLE `{table}` ADD COLUMN `state` MEDIUMTEXT NULL")
    with pytest.raises(ConfigurationError) as info:
        async with open_repository({**options, "mysql_skip_table_create": True}):
            pass
    message = str(info.value)
    assert "'state'" not in message and add_paused_sql(table) in message
    assert create_pauses_sql(table, "utf8mb4_nopad_bin") in message
    await query(raw_connection, add_paused_sql(table))
    await query(raw_connection, create_pauses_sql(table, "utf8mb4_nopad_bin"))
    async with open_repository({**options, "mysql_skip_table_create": True}) as repository:
        assert await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]
        assert await repository.pause(PauseRule("p", "", True), now=T0) == 1


async def test_a_foreign_table_where_the_rules_go_is_reported(
    options: dict[str, Any], table: str, raw_connection: Any
) -> None:
    await query(raw_connection, f"CREATE TABLE `{table}_pauses` (id INT PRIMARY KEY)")
    with pytest.raises(ConfigurationError, match="not a pause-rule table") as info:
        async with open_repository(options):
            pass
    assert f"{table}_pauses" in str(info.value)


def test_add_state_sql_uses_if_not_exists_only_on_mariadb() -> None:
    from pyncette_mysql._schema import add_state_sql

    assert "IF NOT EXISTS" in add_state_sql("t", Server.parse("10.11.6-MariaDB"))
    assert add_state_sql("t", Server.parse("8.0.36")) == "ALTER TABLE `t` ADD COLUMN `state` MEDIUMTEXT NULL"


def test_add_paused_sql_is_the_same_on_both_servers() -> None:
    """One ALTER (valid on MySQL 8 and MariaDB): the column and the rebuilt index change together, atomically."""
    assert add_paused_sql("t") == (
        "ALTER TABLE `t` ADD COLUMN `paused` TINYINT NOT NULL DEFAULT 0, DROP INDEX `pyncette_due`, "
        "ADD INDEX `pyncette_due` (`parent`, `paused`, `scheduled_at`)"
    )
    assert add_paused_sql("t", add_column=False, drop_index=False) == (
        "ALTER TABLE `t` ADD INDEX `pyncette_due` (`parent`, `paused`, `scheduled_at`)"
    )


# --- pausing ---------------------------------------------------------------------------------------


def test_rule_table_names_fit_the_identifier_limit() -> None:
    assert pauses_table_name("pyncette_tasks") == "pyncette_tasks_pauses"
    long = "t" * 64
    assert len(pauses_table_name(long)) == 64
    assert pauses_table_name(long) != pauses_table_name("t" * 63 + "u")


def test_prefix_range() -> None:
    top = "\U0010ffff"
    assert prefix_range("ab") == ("ab", "ac")
    assert prefix_range("a" + top) == ("a" + top, "b")
    assert prefix_range(top * 2) == (top * 2, None)
    assert prefix_range("\ud7ff") == ("\ud7ff", "\ue000")  # past the surrogates


async def test_pause_with_the_longest_table_name(mysql_options: dict[str, Any]) -> None:
    options = {**mysql_options, "mysql_table_name": "l" * 52 + uuid.uuid4().hex[:12]}
    try:
        async with open_repository(options) as repository:
            await repository.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.CREATE)
            assert await repository.pause(PauseRule("p", "a", False), now=T0) == 1
            claimed = await repository.claim("p", now=T0, limit=5, lease_until=T0 + LEASE, token="t")
            assert [r.name for r in claimed] == ["b"]
    finally:
        await backend.purge(settings(options))


async def test_prefixes_at_the_edges_of_the_key_range(repository: Repository) -> None:
    top = "\U0010ffff"
    names = ["a", "a" + top, "a" + top + "x", "b", top, top + "a", top * 2, "\ud7ff\ue000", "\ue000"]
    await repository.register([rec(n) for n in names], now=T0, mode=RegisterMode.CREATE)
    assert await repository.pause(PauseRule("p", "a" + top, True), now=T0) == 2
    assert await repository.pause(PauseRule("p", top, True), now=T0) == 3
    assert await repository.pause(PauseRule("p", "\ud7ff", True), now=T0) == 1
    claimed = await repository.claim("p", now=T0, limit=20, lease_until=T0 + LEASE, token="t")
    assert sorted(r.name for r in claimed) == sorted(["\ue000", "a", "b"])


async def test_too_long_rules_are_refused(repository: Repository) -> None:
    with pytest.raises(ConfigurationError, match="255"):
        await repository.pause(PauseRule("p", "x" * 256, True), now=T0)
    with pytest.raises(ConfigurationError, match="255"):
        await repository.pause(PauseRule("p" * 256, "x", True), now=T0)
    assert await repository.resume("p", "x" * 256, prefix=True, now=T0) is False


@pytest.mark.parametrize("mode", list(RegisterMode))
async def test_register_waits_for_a_pause_in_progress(
    repository: Repository, raw_connection: Any, mode: RegisterMode
) -> None:
    """A record inserted while a pause of its parent is being committed ends up held (white box: the pause's own
    statements run on a second connection and commit only once the register has started)."""
    assert isinstance(repository, MySQLRepository)
    await repository.register([rec("x-old")], now=T0, mode=RegisterMode.CREATE)
    await run(raw_connection, "SET SESSION tx_isolation = 'READ-COMMITTED'")
    await run(raw_connection, *repository._pause_statements(raw_connection.escape, PauseRule("p", "x-", True)))
    registering = asyncio.ensure_future(repository.register([rec("x-new")], now=T0, mode=mode))
    await asyncio.sleep(0.3)
    assert not registering.done()  # it waits for the pause to commit
    await run(raw_connection, "COMMIT")
    assert await asyncio.wait_for(registering, 10) == [True]
    assert await repository.claim("p", now=T0, limit=10, lease_until=T0 + LEASE, token="t") == []
    rows = await query(raw_connection, f"SELECT name, paused FROM `{repository._table}` ORDER BY name")
    assert rows == [("x-new", 1), ("x-old", 1)]


async def test_pause_waits_for_a_record_being_inserted(repository: Repository, raw_connection: Any) -> None:
    """A plain UPDATE in READ COMMITTED passes over a row another transaction is inserting; the pause's locking
    read waits for it, so a record whose register checked the rules before the pause began is held too."""
    assert isinstance(repository, MySQLRepository)
    await repository.register([rec("x-old")], now=T0, mode=RegisterMode.CREATE)
    await run(
        raw_connection,
        "SET SESSION tx_isolation = 'READ-COMMITTED'",
        "START TRANSACTION",
        f"INSERT INTO `{repository._table}` (`parent`, `name`, `spec`, `scheduled_at`) "
        "VALUES ('p', 'x-new', '{}', '2030-01-01 00:00:00')",
    )
    pausing = asyncio.ensure_future(repository.pause(PauseRule("p", "x", True), now=T0))
    await asyncio.sleep(0.3)
    assert not pausing.done()
    await run(raw_connection, "COMMIT")
    assert await asyncio.wait_for(pausing, 10) == 2
    assert await repository.claim("p", now=T0, limit=10, lease_until=T0 + LEASE, token="t") == []


async def test_registering_while_pausing_and_resuming(options: dict[str, Any]) -> None:
    """Instances register new records of a parent while another pauses and resumes a prefix of it: afterwards
    exactly the records the remaining rule matches are held (deadlocks between them are retried)."""
    async with open_repository(options) as control, open_repository(options) as other:

        async def registering(repo: Repository, worker: int) -> None:
            for batch in range(15):
                records = [rec(f"{prefix}{worker}-{batch}-{i}") for prefix in ("x", "y") for i in range(5)]
                mode = (RegisterMode.CREATE, RegisterMode.UPDATE, RegisterMode.FORCE)[batch % 3]
                assert all(await repo.register(records, now=T0, mode=mode))

        async def pausing() -> None:
            for _ in range(5):
                await control.pause(PauseRule("p", "x", True), now=T0)
                await control.pause(PauseRule("p", "y", True), now=T0)
                await control.resume("p", "y", prefix=True, now=T0)
            await control.pause(PauseRule("p", "x", True), now=T0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(registering, control, 0)
            tg.start_soon(registering, other, 1)
            tg.start_soon(registering, other, 2)
            tg.start_soon(pausing)
        claimed = await other.claim("p", now=T0, limit=1000, lease_until=T0 + LEASE, token="t")
        assert {r.name[0] for r in claimed} == {"y"}
        assert len(claimed) == 3 * 15 * 5
        assert await control.resume("p", "x", prefix=True, now=T0) is True
        claimed = await other.claim("p", now=T0, limit=1000, lease_until=T0 + LEASE, token="t")
        assert len(claimed) == 3 * 15 * 5 and {r.name[0] for r in claimed} == {"x"}


async def test_pause_and_resume_are_one_round_trip_each(
    repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyncette_mysql import _repository

    await repository.register([rec(f"n{i}") for i in range(50)], now=T0, mode=RegisterMode.CREATE)
    sent: list[tuple[str, ...]] = []

    async def counting(conn: Any, *statements: str) -> Any:
        sent.append(statements)
        return await run(conn, *statements)

    monkeypatch.setattr(_repository, "run", counting)
    assert await repository.pause(PauseRule("p", "n", True), now=T0) == 50
    assert await repository.resume("p", "n", prefix=True, now=T0) is True
    assert [len(statements) for statements in sent] == [5, 5]  # START TRANSACTION ... COMMIT, one string each


async def test_registering_reads_no_row_for_pauses_when_there_is_no_rule(
    repository: Repository, raw_connection: Any
) -> None:
    """The hot path: with no rule for the parents, the statement that marks inserted records held is found empty
    before any row is read; with a rule it reads just the inserted rows, by key range."""
    assert isinstance(repository, MySQLRepository)
    records = [rec(f"n{i:03d}") for i in range(100)] + [rec("n000", parent="q")]
    await repository.register(records, now=T0, mode=RegisterMode.CREATE)
    for batch in range(3):  # other records, so that reading by key is the cheaper plan
        others = [rec(f"m{batch}-{i}", parent="z") for i in range(1000)]
        await repository.register(others, now=T0, mode=RegisterMode.CREATE)
    await query(raw_connection, f"ANALYZE TABLE `{repository._table}`")
    _, update = repository._hold(raw_connection.escape, [(r.parent, r.name) for r in records])

    async def plan() -> list[dict[str, Any]]:
        async with raw_connection.cursor(aiomysql.DictCursor) as cursor:
            await cursor.execute("EXPLAIN " + update)
            return list(await cursor.fetchall())

    assert [row["Extra"] for row in await plan()] == ["Impossible WHERE"]
    await repository.pause(PauseRule("q", "x", False), now=T0)
    outer = (await plan())[0]
    assert (outer["table"], outer["key"], outer["type"]) == (repository._table, "PRIMARY", "range")
