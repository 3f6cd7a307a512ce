"""The table layout: DDL, creation on startup and the check that an existing table fits."""

from __future__ import annotations

import hashlib
from typing import Any

from pyncette.errors import ConfigurationError
from pyncette.redaction import get_logger

from ._config import TABLE_NAME_PATTERN

logger = get_logger(__name__)

#: Seconds the DDL may take (building the index on a big existing table, or
#: waiting for another instance doing so), instead of the command timeout.
SETUP_TIMEOUT = 3600.0

#: Columns a table from any 2.x version has.
COLUMNS = ("parent", "name", "spec", "scheduled_at", "locked_until", "locked_by")
#: The column added after 2.0 (``Record.state``); an existing table gets it on startup.
STATE_COLUMN = "state"

#: When a record next becomes claimable. GREATEST ignores NULLs, so this is
#: ``scheduled_at`` for an unleased record and the later of the two otherwise.
#: The claim query must spell it exactly like this to match the index.
CLAIMABLE_AT = "GREATEST(scheduled_at, locked_until)"


def quote(identifier: str) -> str:
    """Quote an identifier that has already passed :data:`TABLE_NAME_PATTERN`."""
    if not TABLE_NAME_PATTERN.fullmatch(identifier):  # defence in depth: never quote anything else
        raise ConfigurationError(f"invalid identifier {identifier!r}")
    return f'"{identifier}"'


def index_name(table: str) -> str:
    """The due-work index's name: ``<table>_due``, shortened with a hash to fit 63 characters."""
    name = f"{table}_due"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[:50]}_{digest}_due"


def lock_key(table: str) -> int:
    """A stable signed 64-bit advisory-lock key for creating ``table``."""
    digest = hashlib.sha256(f"pyncette_postgres:create:{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def add_state_ddl(table: str) -> str:
    """The statement that gives a table created before ``state`` existed that column (idempotent, no rewrite)."""
    return f"ALTER TABLE {quote(table)} ADD COLUMN IF NOT EXISTS {STATE_COLUMN} text NULL;"


def ddl(table: str) -> str:
    """The statements that create ``table`` and its due-work index (idempotent)."""
    return f"""\
CREATE TABLE IF NOT EXISTS {quote(table)} (
    parent       text COLLATE "C" NOT NULL,
    name         text COLLATE "C" NOT NULL,
    spec         text NULL,
    scheduled_at timestamptz NOT NULL,
    locked_until timestamptz NULL,
    locked_by    text NULL,
    state        text NULL,
    PRIMARY KEY (parent, name)
);
CREATE INDEX IF NOT EXISTS {quote(index_name(table))}
    ON {quote(table)} (parent, {CLAIMABLE_AT});
"""


async def _inspect(connection: Any, table: str) -> tuple[set[str], bool]:
    """The table's column names (empty when it does not exist) and whether the due-work index exists."""
    rows = await connection.fetch(
        "SELECT attname, to_regclass($2) IS NOT NULL AS indexed FROM pg_attribute"
        " WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        quote(table),
        quote(index_name(table)),
    )
    return {row["attname"] for row in rows}, any(row["indexed"] for row in rows)


async def ensure_table(connection: Any, table: str, *, create: bool) -> None:
    """Check that ``table`` fits and, unless told not to, create it and its index when missing.

    Creation is serialized by a transaction-level advisory lock, because
    ``CREATE TABLE IF NOT EXISTS`` run by two sessions at once can still fail
    on a unique violation in the catalog.
    """
    columns, indexed = await _inspect(connection, table)
    if not columns and not create:
        raise ConfigurationError(
            f"table {table!r} (postgres_table_name) does not exist and postgres_skip_table_create is set: "
            "create it (see the DDL in the pyncette-postgres README) or unset postgres_skip_table_create"
        )
    missing = sorted(set(COLUMNS) - columns)
    if columns and missing:
        raise ConfigurationError(
            f"table {table!r} (postgres_table_name) exists but lacks column(s) {', '.join(missing)}; "
            "it was not created by this version of pyncette-postgres (see the DDL in its README; a Pyncette 1.x "
            "table is migrated with 'pyncette migrate MODULE:APP --from-1x')"
        )
    lacks_state = bool(columns) and STATE_COLUMN not in columns
    if lacks_state and not create:
        raise ConfigurationError(
            f"table {table!r} (postgres_table_name) lacks column {STATE_COLUMN!r}, added in this version, and "
            f"postgres_skip_table_create is set: run {add_state_ddl(table)!r} or unset postgres_skip_table_create"
        )
    if not create and not indexed:
        logger.warning(
            "table %r has no index %r: claiming due tasks will scan the whole table (see the README's DDL)",
            table,
            index_name(table),
        )
    if create and (not indexed or lacks_state):
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key(table), timeout=SETUP_TIMEOUT)
            await connection.execute(ddl(table) + add_state_ddl(table), timeout=SETUP_TIMEOUT)
