"""The ``mysql`` backend descriptor: the option schema, server detection, table creation and upgrade, the pool."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import Any

import aiomysql

from pyncette.abc import Backend, Capabilities, LegacyStore, Repository, map_exceptions
from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Boolean, Custom, Identifier, Integer, Option, Options, Seconds, Settings, Text
from pyncette.redaction import register_secret

from ._legacy import MySQLLegacyStore
from ._repository import ERRORS, MySQLRepository, QuietCursor, classify, error_code, run
from ._schema import (
    CODE_POINT_ORDER,
    COLLATIONS,
    COLUMNS,
    DUE_COLUMNS,
    DUE_INDEX,
    PAUSE_COLUMNS,
    PAUSED_COLUMN,
    STATE_COLUMN,
    Server,
    Upsert,
    add_paused_sql,
    add_state_sql,
    create_pauses_sql,
    create_table_sql,
    pauses_table_name,
    quote_table,
)

DEFAULT_TABLE = "pyncette_tasks"
DEFAULT_PORT = 3306
#: Multi-statement queries let a transaction travel in one round trip; FOUND_ROWS makes UPDATE
#: report matched rather than changed rows.
_CLIENT_FOUND_ROWS = 1 << 1  # protocol capability flags (pymysql.constants.CLIENT)
_CLIENT_MULTI_STATEMENTS = 1 << 16
_CLIENT_FLAGS = _CLIENT_MULTI_STATEMENTS | _CLIENT_FOUND_ROWS
_FIELD_TYPE_DATETIME = 12  # pymysql.constants.FIELD_TYPE.DATETIME
#: Server errors at startup that the user must fix, with the options involved.
_SETUP_ERRORS = {
    1044: "mysql_user / mysql_database (no access to the database)",
    1045: "mysql_user / mysql_password (access denied)",
    1049: "mysql_database (unknown database)",
    1698: "mysql_user / mysql_password (access denied)",
}
#: ``innodb_lock_wait_timeout``'s range on both servers.
_MAX_LOCK_WAIT = 1_073_741_824
#: ALTER errors meaning another instance upgraded the table meanwhile: duplicate column, duplicate index name, no
#: such index (it dropped the old one, in the same atomic ALTER that added the new one).
_ALREADY_UPGRADED = frozenset({1060, 1061, 1091})


def _ssl(value: object) -> bool | ssl.SSLContext:
    if isinstance(value, ssl.SSLContext):
        return value
    return Boolean().convert(value)


def _check(settings: Settings) -> None:
    low, high = settings["mysql_pool_min_size"], settings["mysql_pool_size"]
    if low > high:
        raise ConfigurationError(f"invalid mysql_pool_min_size {low!r}: must not exceed mysql_pool_size ({high})")


def _decoders() -> dict[int, Any]:
    """pymysql's result decoders, with DATETIME read straight into aware UTC datetimes (and ~30x faster).

    A value that is not a valid date (a zero date a non-strict session wrote, say) stays text; the
    repository reports such a record as corrupt.
    """
    decoders: dict[int, Any] = dict(importlib.import_module("pymysql.converters").decoders)

    def utc_datetime(value: str | bytes) -> datetime | str:
        text = value.decode("ascii", "replace") if isinstance(value, (bytes, bytearray)) else value
        try:
            return datetime.fromisoformat(text + "+00:00")
        except ValueError:
            return text

    decoders[_FIELD_TYPE_DATETIME] = utc_datetime
    return decoders


def _where(settings: Settings) -> str:
    """Names the server in messages (never a secret)."""
    return f"{settings['mysql_host']}:{settings['mysql_port']}/{settings['mysql_database']}"


def _wire_password(password: str) -> str:
    """The password in the form aiomysql needs to send its UTF-8 bytes.

    The server checks the bytes the client sends, and a user created from a UTF-8 client has the UTF-8
    bytes of the password; aiomysql encodes the password as Latin-1, so hand it the UTF-8 bytes
    spelled as Latin-1 characters (ASCII passwords are unchanged).
    """
    wire = password.encode("utf-8", "surrogatepass").decode("latin-1")
    register_secret(wire)
    return wire


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments of ``aiomysql.connect`` / ``create_pool`` shared by every connection."""
    use_ssl = settings["mysql_ssl"]
    context = use_ssl if isinstance(use_ssl, ssl.SSLContext) else ssl.create_default_context() if use_ssl else None
    return {
        "host": settings["mysql_host"],
        "port": settings["mysql_port"],
        "user": settings["mysql_user"],
        "password": _wire_password(settings["mysql_password"]),
        "db": settings["mysql_database"],
        "charset": "utf8mb4",
        "autocommit": True,
        "client_flag": _CLIENT_FLAGS,
        "connect_timeout": settings["mysql_connect_timeout"],
        "ssl": context,
        "cursorclass": QuietCursor,
        "conv": _decoders(),
    }


async def _within_timeout(settings: Settings, connecting: Awaitable[Any]) -> Any:
    """Await a connection (or pool), bounding TCP connect *and* handshake by ``mysql_connect_timeout``."""
    what = f"connecting to MySQL server at {_where(settings)}"
    timeout = settings["mysql_connect_timeout"]
    try:
        with map_exceptions(ERRORS, what):
            try:
                return await asyncio.wait_for(connecting, timeout=timeout)
            except asyncio.TimeoutError:
                raise BackendError(f"{what} timed out after {timeout:g} s") from None
    except BackendError as exc:
        classified = classify(exc)
        if classified is not exc:
            raise classified from exc.__cause__
        raise


class MySQLBackend(Backend):
    """``mysql``: MySQL 8.0+ or MariaDB 10.6+ through ``aiomysql``; per app, one InnoDB table of tasks and one of
    pause rules."""

    name = "mysql"
    capabilities = Capabilities(persistent=True, coordinated=True, asyncio_only=True, control=True)
    options = Options(
        Option("mysql_host", Text(), "server host name or address", required=True),
        Option("mysql_port", Integer(1, 65535), "server TCP port", default=DEFAULT_PORT),
        Option("mysql_database", Text(), "database (schema) holding the table", required=True),
        Option("mysql_user", Text(), "user name", required=True),
        Option("mysql_password", Text(allow_empty=True), "password", default="", secret=True),
        Option(
            "mysql_table_name",
            Identifier(r"[A-Za-z0-9_]{1,64}", "1-64 letters, digits or underscores"),
            "table holding the app's tasks; apps sharing a database use different tables",
            default=DEFAULT_TABLE,
            isolates=True,
        ),
        Option(
            "mysql_skip_table_create",
            Boolean(),
            "do not create the table; fail at startup if it is missing",
            default=False,
        ),
        Option("mysql_pool_size", Integer(1, 1000), "maximum connections in the pool", default=10),
        Option("mysql_pool_min_size", Integer(0, 1000), "connections opened at startup and kept", default=1),
        Option(
            "mysql_connect_timeout",
            Seconds(),
            "seconds to wait for a new connection (TCP connect and handshake); no upper limit",
            default=5.0,
        ),
        Option(
            "mysql_command_timeout",
            Seconds(),
            "seconds one call may take, lock waits included, before BackendError; no upper limit",
            default=30.0,
        ),
        Option(
            "mysql_ssl",
            Custom(
                _ssl,
                "True or False (as text: true/false, yes/no, on/off, 1/0) or an ssl.SSLContext",
                "boolean or SSLContext",
            ),
            "TLS: True for default certificate verification, or an ssl.SSLContext",
            default=False,
        ),
        Option(
            "mysql_lock_wait_timeout",
            Integer(1, _MAX_LOCK_WAIT),
            "session innodb_lock_wait_timeout in seconds (default: the server's)",
        ),
        check=_check,
    )

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Repository]:
        server, collation = await self._prepare(settings)
        kwargs = connect_kwargs(settings)
        pool = await _within_timeout(
            settings,
            aiomysql.create_pool(
                minsize=settings["mysql_pool_min_size"],
                maxsize=settings["mysql_pool_size"],
                pool_recycle=3600,
                init_command=server.init_command(settings["mysql_lock_wait_timeout"]),
                **kwargs,
            ),
        )

        async def connect() -> Any:
            return await _within_timeout(settings, aiomysql.connect(**kwargs))

        try:
            yield MySQLRepository(
                pool,
                settings["mysql_table_name"],
                Upsert(server),
                _where(settings),
                settings["mysql_command_timeout"],
                connect,
                ordered=collation in CODE_POINT_ORDER,
            )
        finally:
            with contextlib.suppress(Exception):
                await pool.clear()
            pool.close()
            await pool.wait_closed()

    @contextlib.asynccontextmanager
    async def _connection(self, settings: Settings) -> AsyncIterator[Any]:
        """A single setup connection; startup errors the user must fix become ConfigurationError."""
        try:
            conn = await _within_timeout(settings, aiomysql.connect(**connect_kwargs(settings)))
        except BackendError as exc:
            hint = _SETUP_ERRORS.get(error_code(exc.__cause__) or 0)
            if hint is not None:
                raise ConfigurationError(f"{exc} -- check {hint}") from exc.__cause__
            raise
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await conn.ensure_closed()
            conn.close()

    async def _prepare(self, settings: Settings) -> tuple[Server, str]:
        """Identify the server and make sure the tables exist with the expected layout, upgrading one made by an
        earlier 2.x version. Returns the server and the collation of the key columns."""
        table, where = settings["mysql_table_name"], _where(settings)
        rules = pauses_table_name(table)
        async with self._connection(settings) as conn:
            esc = conn.escape
            with map_exceptions(ERRORS, f"checking table {table!r} on {where}"):
                version, columns, rule_columns, due, cipher = await run(
                    conn,
                    "SELECT VERSION()",
                    "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
                    f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {esc(table)}",
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                    f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {esc(rules)}",
                    "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                    f"AND TABLE_NAME = {esc(table)} AND INDEX_NAME = {esc(DUE_INDEX)} ORDER BY SEQ_IN_INDEX",
                    "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
                )
            if settings["mysql_ssl"] and not (cipher.rows and cipher.rows[0][1]):
                # aiomysql quietly goes on without TLS when the server does not offer it.
                raise ConfigurationError(
                    f"mysql_ssl is set but the MySQL server at {where} does not offer TLS: "
                    "enable TLS on the server or unset mysql_ssl"
                )
            server = Server.parse(str(version.rows[0][0]))
            present = {str(row[0]).lower(): row[1] for row in columns.rows}
            found_rules = {str(row[0]).lower() for row in rule_columns.rows}
            if found_rules and not found_rules >= set(PAUSE_COLUMNS):
                raise ConfigurationError(
                    f"table {rules!r} on {where}, where the pause rules of table {table!r} are kept, exists but is "
                    "not a pause-rule table (other columns): rename or drop it, or choose another mysql_table_name"
                )
            if not present:
                if settings["mysql_skip_table_create"]:
                    raise ConfigurationError(
                        f"table {table!r} does not exist in database {settings['mysql_database']!r} on "
                        f"{settings['mysql_host']}:{settings['mysql_port']} and mysql_skip_table_create is set: "
                        "create it (see the pyncette-mysql README for the DDL) or unset mysql_skip_table_create"
                    )
                collation = await self._create_table(conn, table, where)
                await self._create_pauses(conn, table, where, collation)
                return server, collation
            if missing := [c for c in COLUMNS if c not in present]:
                raise ConfigurationError(
                    f"table {table!r} on {where} exists but lacks column(s) {', '.join(missing)} "
                    "(a table from another program or from Pyncette 1.x?): choose another mysql_table_name, or "
                    "migrate a 1.x table with 'pyncette migrate MODULE:APP --from-1x'"
                )
            collation = str(present["name"])
            index = tuple(str(row[0]).lower() for row in due.rows)
            # (what is missing, the statement that adds it, the same for both servers to show in messages)
            upgrades: list[tuple[str, str, str]] = []
            if STATE_COLUMN not in present:
                upgrades.append((f"column {STATE_COLUMN!r}", add_state_sql(table, server), add_state_sql(table)))
            if PAUSED_COLUMN not in present or index != DUE_COLUMNS:
                alter = add_paused_sql(table, add_column=PAUSED_COLUMN not in present, drop_index=bool(index))
                upgrades.append(
                    (f"column {PAUSED_COLUMN!r} and index {DUE_INDEX!r} ({', '.join(DUE_COLUMNS)})", alter, alter)
                )
            if not found_rules:
                create = create_pauses_sql(table, collation)
                upgrades.append((f"table {rules!r}", create, create))
            if upgrades and settings["mysql_skip_table_create"]:
                raise ConfigurationError(
                    f"table {table!r} on {where} lacks {', '.join(what for what, _, _ in upgrades)}, added in this "
                    "version, and mysql_skip_table_create is set: unset mysql_skip_table_create, or run\n"
                    + ";\n".join(shown for _, _, shown in upgrades)
                )
            for what, statement, shown in upgrades:
                await self._upgrade(conn, f"adding {what} for table {table!r} on {where}", statement, shown)
        return server, collation

    @staticmethod
    async def _upgrade(conn: Any, what: str, statement: str, shown: str | None = None) -> None:
        """Run one upgrade statement; another instance running it meanwhile is not an error. A refusal for lack of
        privilege names ``shown`` (default: the statement) for the user to run."""
        with map_exceptions(ERRORS, what):
            try:
                await run(conn, statement)
            except aiomysql.MySQLError as exc:
                if error_code(exc) in _ALREADY_UPGRADED:
                    return
                if error_code(exc) == 1142:  # ALTER / CREATE command denied
                    raise ConfigurationError(
                        f"{what} failed: {exc}; run {shown or statement!r} as a user allowed to, then start again"
                    ) from exc
                raise

    @staticmethod
    async def _create_pauses(conn: Any, table: str, where: str, collation: str) -> None:
        await MySQLBackend._upgrade(
            conn, f"creating table {pauses_table_name(table)!r} on {where}", create_pauses_sql(table, collation)
        )

    @staticmethod
    async def _create_table(conn: Any, table: str, where: str) -> str:
        """Create the task table with the best binary collation available; returns that collation."""
        what = f"creating table {table!r} on {where}"
        with map_exceptions(ERRORS, what):
            (available,) = await run(
                conn,
                "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN "
                f"({', '.join(map(conn.escape, COLLATIONS))})",
            )
            names = {str(row[0]) for row in available.rows}
            collation = next((c for c in COLLATIONS if c in names), COLLATIONS[-1])
            try:
                await run(conn, create_table_sql(table, collation))
            except aiomysql.MySQLError as exc:
                if error_code(exc) == 1142:  # CREATE command denied
                    raise ConfigurationError(
                        f"{what} failed: {exc}; create it yourself (DDL in the pyncette-mysql README) "
                        "and set mysql_skip_table_create=True"
                    ) from exc
                raise
        return collation

    @contextlib.asynccontextmanager
    async def legacy(self, settings: Settings) -> AsyncIterator[LegacyStore]:
        """The Pyncette 1.x table of the same name (see :mod:`pyncette_mysql._legacy`); creates nothing."""
        async with self._connection(settings) as conn:
            yield MySQLLegacyStore(
                conn, settings["mysql_table_name"], _where(settings), settings["mysql_command_timeout"]
            )

    async def purge(self, settings: Settings) -> None:
        """Drop the table and its pause-rule table."""
        table = settings["mysql_table_name"]
        async with self._connection(settings) as conn:
            with map_exceptions(ERRORS, f"dropping table {table!r} on {_where(settings)}"):
                await run(conn, f"DROP TABLE IF EXISTS {quote_table(table)}, {quote_table(pauses_table_name(table))}")


backend = MySQLBackend()
#: Pyncette 1.x name of the factory: ``Pyncette(repository_factory=mysql_repository, mysql_host=...)``.
mysql_repository = backend
