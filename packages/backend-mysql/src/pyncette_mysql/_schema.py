"""Server detection, the table's DDL and the few SQL fragments that differ between MySQL and MariaDB."""

from __future__ import annotations

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
#: Name of the due-work index.
DUE_INDEX = "pyncette_due"

#: Binary collations for the key columns, best first. The NO PAD ones compare trailing spaces too
#: (``utf8mb4_bin`` is PAD SPACE, so it would treat ``"a"`` and ``"a "`` as the same name).
COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")

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


def add_state_sql(table: str, server: Server | None = None) -> str:
    """The statement that gives a table created before ``state`` existed that column (nullable, so existing
    rows read as no state; an instant change on MySQL 8.0.12+ and MariaDB 10.3+). Only MariaDB has
    ``IF NOT EXISTS`` here; on MySQL the caller checks ``information_schema`` first."""
    guard = "IF NOT EXISTS " if server is not None and server.mariadb else ""
    return f"ALTER TABLE {quote_table(table)} ADD COLUMN {guard}`{STATE_COLUMN}` MEDIUMTEXT NULL"


def create_table_sql(table: str, collation: str) -> str:
    """The DDL run at startup (idempotent: ``IF NOT EXISTS``)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_table(table)} (\n"
        f"  `parent` VARCHAR({MAX_KEY_CHARS}) NOT NULL,\n"
        f"  `name` VARCHAR({MAX_KEY_CHARS}) NOT NULL,\n"
        "  `spec` MEDIUMTEXT NULL,\n"
        "  `scheduled_at` DATETIME(6) NOT NULL,\n"
        "  `locked_until` DATETIME(6) NULL,\n"
        f"  `locked_by` VARCHAR({MAX_TOKEN_CHARS}) NULL,\n"
        "  `state` MEDIUMTEXT NULL,\n"
        "  PRIMARY KEY (`parent`, `name`),\n"
        f"  KEY `{DUE_INDEX}` (`parent`, `scheduled_at`)\n"
        f") ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
    )
