"""Server detection, the DDL of the task table and its pause-rule table, the upgrades of tables made by earlier
2.x versions, and the few SQL fragments that differ between MySQL and MariaDB."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pyncette.errors import ConfigurationError

#: Longest ``parent`` and ``name`` in characters. Both are utf8mb4 (4 bytes per character), so the
#: primary key takes 2 x 1020 bytes, within InnoDB's 3072-byte limit for DYNAMIC rows.
MAX_KEY_CHARS = 255
#: ``locked_by`` holds the runtime's lease tokens (32 hex characters today).
MAX_TOKEN_CHARS = 255
#: ``spec`` is MEDIUMTEXT.
MAX_SPEC_BYTES = 16_777_215

#: Columns every table must have; checked at startup so a foreign table fails with a clear message.
COLUMNS = ("parent", "name", "spec", "scheduled_at", "locked_until", "locked_by")
#: The column added after 2.0 (``Record.state``); an existing table gets it at startup.
STATE_COLUMN = "state"
#: The column added with pausing: 1 while a pause rule holds the record. An existing table gets it at startup.
PAUSED_COLUMN = "paused"
#: Name of the due-work index, and its columns (``paused`` was added with pausing, so claims skip held records
#: without reading them).
DUE_INDEX = "pyncette_due"
DUE_COLUMNS = ("parent", PAUSED_COLUMN, "scheduled_at")
#: Columns of the pause-rule table (``<table>_pauses``).
PAUSE_COLUMNS = ("parent", "kind", "match", "info")
#: ``kind`` of a pause-rule row: a whole name, a prefix of names, or the parent's guard row (``match`` empty), which
#: pause and resume lock first so that rule changes of one parent never interleave.
NAME_RULE, PREFIX_RULE, GUARD_ROW = 0, 1, 2
#: MySQL's identifier limit.
MAX_IDENTIFIER = 64

#: Binary collations for the key columns, best first. The NO PAD ones compare trailing spaces too
#: (``utf8mb4_bin`` is PAD SPACE, so it would treat ``"a"`` and ``"a "`` as the same name).
COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")
#: The collations that order strings exactly by code point (NO PAD and binary), so that the names starting with a
#: prefix are one contiguous key range (see :func:`prefix_range`).
CODE_POINT_ORDER = frozenset({"utf8mb4_nopad_bin", "utf8mb4_0900_bin"})

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class Server:
    """What the connected server is, and the SQL spellings it needs."""

    version: str
    mariadb: bool
    release: tuple[int, int, int]

    @classmethod
    def parse(cls, version: str) -> Server:
        """Recognise ``SELECT VERSION()`` output; refuse servers without ``SKIP LOCKED``."""
        match = _VERSION.match(version)
        if match is None:
            raise ConfigurationError(f"unrecognised MySQL server version {version!r}")
        release = (int(match[1]), int(match[2]), int(match[3]))
        server = cls(version, "mariadb" in version.lower(), release)
        minimum = (10, 6, 0) if server.mariadb else (8, 0, 1)
        if release < minimum:
            raise ConfigurationError(
                f"MySQL server {version!r} is too old: pyncette-mysql needs MySQL 8.0.1+ or MariaDB 10.6+ "
                "(for SELECT ... FOR UPDATE SKIP LOCKED)"
            )
        return server

    @property
    def isolation_variable(self) -> str:
        """MariaDB before 11.1 only knows ``tx_isolation``; MySQL 8 only ``transaction_isolation``."""
        if self.mariadb and self.release < (11, 1, 0):
            return "tx_isolation"
        return "transaction_isolation"

    @property
    def row_alias(self) -> bool:
        """MySQL 8.0.19+ names the incoming row with ``AS alias``; ``VALUES(col)`` is deprecated there
        (and a warning per statement), while MariaDB only has ``VALUES(col)``."""
        return not self.mariadb and self.release >= (8, 0, 19)

    def init_command(self, lock_wait_timeout: int | None) -> str:
        """The statement run on every new connection: UTC session time zone, READ COMMITTED, and strict
        mode on top of the server's ``sql_mode``, so a value that does not fit is refused, never truncated."""
        command = (
            f"SET time_zone = '+00:00', {self.isolation_variable} = 'READ-COMMITTED', "
            "sql_mode = CONCAT_WS(',', NULLIF(@@session.sql_mode, ''), 'STRICT_ALL_TABLES')"
        )
        if lock_wait_timeout is not None:
            command += f", innodb_lock_wait_timeout = {int(lock_wait_timeout)}"
        return command


class Upsert:
    """Builds ``INSERT ... ON DUPLICATE KEY UPDATE`` in the server's spelling."""

    ALIAS = "incoming"

    def __init__(self, server: Server) -> None:
        self._alias = server.row_alias

    def new(self, column: str) -> str:
        """The value the statement tried to insert into ``column``."""
        return f"`{self.ALIAS}`.`{column}`" if self._alias else f"VALUES(`{column}`)"

    def statement(self, table: str, columns: str, rows: list[str], assignments: str) -> str:
        """The upsert of ``rows`` (rendered value tuples); ``assignments`` refer to :meth:`new` values."""
        alias = f" AS `{self.ALIAS}`" if self._alias else ""
        return f"INSERT INTO {table} ({columns}) VALUES {', '.join(rows)}{alias} ON DUPLICATE KEY UPDATE {assignments}"


def quote_table(table: str) -> str:
    """Backtick-quote an already validated table name."""
    return f"`{table}`"


def pauses_table_name(table: str) -> str:
    """The pause-rule table of ``table``: ``<table>_pauses``, shortened with a hash of ``table`` when that would
    exceed MySQL's 64-character identifier limit."""
    name = f"{table}_pauses"
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: MAX_IDENTIFIER - 16]}_{digest}_pauses"


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """Bounds ``[low, high)`` holding exactly the strings that start with ``prefix`` in code-point order
    (``high`` is ``None`` when there is no upper bound: the prefix is all U+10FFFF)."""
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return prefix, None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters utf8mb4 can hold
        following = 0xE000
    return prefix, stem[:-1] + chr(following)


def add_state_sql(table: str, server: Server | None = None) -> str:
    """The statement that gives a table created before ``state`` existed that column (nullable, so existing
    rows read as no state; an instant change on MySQL 8.0.12+ and MariaDB 10.3+). Only MariaDB has
    ``IF NOT EXISTS`` here; on MySQL the caller checks ``information_schema`` first."""
    guard = "IF NOT EXISTS " if server is not None and server.mariadb else ""
    return f"ALTER TABLE {quote_table(table)} ADD COLUMN {guard}`{STATE_COLUMN}` MEDIUMTEXT NULL"


def add_paused_sql(table: str, *, add_column: bool = True, drop_index: bool = True) -> str:
    """The statement that brings a table created before pausing existed up to date: the ``paused`` column
    (``NOT NULL DEFAULT 0``: nothing is held) and the due index rebuilt with it, in one atomic, online ``ALTER``.
    Same SQL on MySQL 8 and MariaDB; ``add_column`` / ``drop_index`` leave out what the table already has / lacks."""
    due = ", ".join(f"`{column}`" for column in DUE_COLUMNS)
    parts = [f"ADD COLUMN `{PAUSED_COLUMN}` TINYINT NOT NULL DEFAULT 0"] if add_column else []
    if drop_index:
        parts.append(f"DROP INDEX `{DUE_INDEX}`")
    parts.append(f"ADD INDEX `{DUE_INDEX}` ({due})")
    return f"ALTER TABLE {quote_table(table)} {', '.join(parts)}"


def create_table_sql(table: str, collation: str) -> str:
    """The DDL run at startup (idempotent: ``IF NOT EXISTS``)."""
    due = ", ".join(f"`{column}`" for column in DUE_COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_table(table)} (\n"
        f"  `parent` VARCHAR({MAX_KEY_CHARS}) NOT NULL,\n"
        f"  `name` VARCHAR({MAX_KEY_CHARS}) NOT NULL,\n"
        "  `spec` MEDIUMTEXT NULL,\n"
        "  `scheduled_at` DATETIME(6) NOT NULL,\n"
        "  `locked_until` DATETIME(6) NULL,\n"
        f"  `locked_by` VARCHAR({MAX_TOKEN_CHARS}) NULL,\n"
        "  `state` MEDIUMTEXT NULL,\n"
        f"  `{PAUSED_COLUMN}` TINYINT NOT NULL DEFAULT 0,\n"
        "  PRIMARY KEY (`parent`, `name`),\n"
        f"  KEY `{DUE_INDEX}` ({due})\n"
        f") ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
    )


def create_pauses_sql(table: str, collation: str) -> str:
    """The DDL of ``table``'s pause-rule table (idempotent). ``collation`` must be the one of ``table``'s key
    columns, so that rules compare with names exactly as the primary key does."""
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_table(pauses_table_name(table))} (\n"
        f"  `parent` VARCHAR({MAX_KEY_CHARS}) NOT NULL,\n"
        "  `kind` TINYINT NOT NULL,\n"
        f"  `match` VARCHAR({MAX_KEY_CHARS}) NOT NULL,\n"
        "  `info` MEDIUMTEXT NULL,\n"
        "  PRIMARY KEY (`parent`, `kind`, `match`)\n"
        f") ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
    )
