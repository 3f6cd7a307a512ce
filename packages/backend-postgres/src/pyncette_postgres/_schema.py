"""The table layout: DDL, creation on startup and the check that an existing table fits."""

from __future__ import annotations

import hashlib
from typing import Any

from pyncette.errors import ConfigurationError

from ._config import TABLE_NAME_PATTERN

#: Columns the repository reads and writes.
COLUMNS = ("parent", "name", "spec", "scheduled_at", "locked_until", "locked_by")

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
    PRIMARY KEY (parent, name)
);
CREATE INDEX IF NOT EXISTS {quote(index_name(table))}
    ON {quote(table)} (parent, {CLAIMABLE_AT});
"""


async def _present(connection: Any, table: str) -> bool:
    found = await connection.fetchval(
        "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
        quote(table),
        quote(index_name(table)),
    )
    return bool(found)


async def ensure_table(connection: Any, table: str, *, create: bool) -> None:
    """Create ``table`` unless told not to, then check it has the expected columns.

    Creation is serialized by a transaction-level advisory lock, because
    ``CREATE TABLE IF NOT EXISTS`` run by two sessions at once can still fail
    on a unique violation in the catalog.
    """
    if create and not await _present(connection, table):
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key(table))
            await connection.execute(ddl(table))
    rows = await connection.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        quote(table),
    )
    if not rows:
        if create:
            raise ConfigurationError(f"table {table!r} (postgres_table_name) vanished right after it was created")
        raise ConfigurationError(
            f"table {table!r} (postgres_table_name) does not exist and postgres_skip_table_create is set: "
            "create it (see the DDL in the pyncette-postgres README) or unset postgres_skip_table_create"
        )
    missing = sorted(set(COLUMNS) - {row["attname"] for row in rows})
    if missing:
        raise ConfigurationError(
            f"table {table!r} (postgres_table_name) exists but lacks column(s) {', '.join(missing)}; "
            "it was not created by this version of pyncette-postgres (see the DDL in its README)"
        )
