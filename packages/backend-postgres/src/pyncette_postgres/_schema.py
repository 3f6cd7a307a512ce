"""The table layout: DDL, creation and in-place upgrade on startup, and the check that existing tables fit.

Each app has two tables: its records (``postgres_table_name``) and, next to it, ``<table>_pauses``, the
pause rules (see :meth:`pyncette.abc.Repository.pause`). A record carries a ``paused`` flag, kept equal to
"some rule of its parent matches it" by pause, resume and register; the claim index leaves flagged records
out, so a claim never reads a held record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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
#: The column added with pausing (whether a pause rule holds the record); an existing table gets it on startup.
PAUSED_COLUMN = "paused"
#: The columns of the rules table.
RULE_COLUMNS = ("parent", "match", "prefix", "info")

#: When a record next becomes claimable. GREATEST ignores NULLs, so this is
#: ``scheduled_at`` for an unleased record and the later of the two otherwise.
#: The claim query must spell it exactly like this to match the index.
CLAIMABLE_AT = "GREATEST(scheduled_at, locked_until)"


def quote(identifier: str) -> str:
    """Quote an identifier that has already passed :data:`TABLE_NAME_PATTERN`."""
    if not TABLE_NAME_PATTERN.fullmatch(identifier):  # defence in depth: never quote anything else
        raise ConfigurationError(f"invalid identifier {identifier!r}")
    return f'"{identifier}"'


def _derived_name(table: str, suffix: str) -> str:
    """``<table>_<suffix>``, shortened with a hash of ``table`` to fit PostgreSQL's 63 characters."""
    name = f"{table}_{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: 63 - 10 - len(suffix)]}_{digest}_{suffix}"


def index_name(table: str) -> str:
    """The claim index's name: ``<table>_claim`` (shortened with a hash to fit 63 characters)."""
    return _derived_name(table, "claim")


def legacy_index_name(table: str) -> str:
    """The due-work index of earlier 2.x versions, ``<table>_due``, which :func:`index_name` replaces."""
    return _derived_name(table, "due")


def pauses_table_name(table: str) -> str:
    """The rules table's name: ``<table>_pauses`` (shortened with a hash to fit 63 characters)."""
    return _derived_name(table, "pauses")


def channel_name(schema: str, table: str) -> str:
    """The wake-up channel of ``schema.table``: ``pyncette:<schema>.<table>``, or, beyond PostgreSQL's
    63 bytes, a hash of both followed by as much of the table name as fits."""
    name = f"pyncette:{schema}.{table}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(f"{schema}.{table}".encode()).hexdigest()[:12]
    return f"pyncette:{digest}:{table[: 63 - 22]}"


async def table_schema(connection: Any, table: str) -> str:
    """The schema ``table`` resolves to on this connection (its ``search_path``); the table must exist."""
    schema: str = await connection.fetchval(
        "SELECT n.nspname::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass($1)",
        quote(table),
    )
    return schema


def lock_key(table: str) -> int:
    """A stable signed 64-bit advisory-lock key for creating ``table``."""
    digest = hashlib.sha256(f"pyncette_postgres:create:{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _rules_ddl(table: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {quote(pauses_table_name(table))} (
    parent text COLLATE "C" NOT NULL,
    match  text COLLATE "C" NOT NULL,
    prefix boolean NOT NULL,
    info   text NULL,
    PRIMARY KEY (parent, match, prefix)
);
"""


def _index_ddl(table: str) -> str:
    return f"""\
CREATE INDEX IF NOT EXISTS {quote(index_name(table))}
    ON {quote(table)} (parent, {CLAIMABLE_AT}) WHERE NOT paused;
"""


def _table_ddl(table: str) -> str:
    return f"""\
CREATE TABLE IF NOT EXISTS {quote(table)} (
    parent       text COLLATE "C" NOT NULL,
    name         text COLLATE "C" NOT NULL,
    spec         text NULL,
    scheduled_at timestamptz NOT NULL,
    locked_until timestamptz NULL,
    locked_by    text NULL,
    state        text NULL,
    paused       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (parent, name)
);
"""


def ddl(table: str) -> str:
    """The statements that create ``table``, its claim index and its rules table (idempotent)."""
    return _table_ddl(table) + _index_ddl(table) + _rules_ddl(table)


def upgrade_ddl(table: str) -> str:
    """The statements that bring a table of an earlier 2.x version to this layout (idempotent).

    Adding the columns only changes the catalog (a constant default needs no rewrite); the claim index is
    built (blocking writes while it is) and the earlier due-work index, which it replaces, dropped.
    """
    t = quote(table)
    return (
        f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {STATE_COLUMN} text NULL;\n"
        f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {PAUSED_COLUMN} boolean NOT NULL DEFAULT false;\n"
        + _index_ddl(table)
        + f"DROP INDEX IF EXISTS {quote(legacy_index_name(table))};\n"
        + _rules_ddl(table)
    )


@dataclass(frozen=True)
class _Found:
    """What exists of an app's tables."""

    columns: set[str]  # of the records table; empty when it does not exist
    rule_columns: set[str]  # of the rules table; empty when it does not exist
    indexed: bool  # the claim index exists
    legacy_indexed: bool  # the earlier due-work index exists


async def _inspect(connection: Any, table: str) -> _Found:
    row = await connection.fetchrow(
        "SELECT"
        " ARRAY(SELECT attname::text FROM pg_attribute"
        "  WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped) AS columns,"
        " ARRAY(SELECT attname::text FROM pg_attribute"
        "  WHERE attrelid = to_regclass($2) AND attnum > 0 AND NOT attisdropped) AS rule_columns,"
        " to_regclass($3) IS NOT NULL AS indexed, to_regclass($4) IS NOT NULL AS legacy_indexed",
        quote(table),
        quote(pauses_table_name(table)),
        quote(index_name(table)),
        quote(legacy_index_name(table)),
    )
    return _Found(set(row["columns"]), set(row["rule_columns"]), row["indexed"], row["legacy_indexed"])


async def ensure_table(connection: Any, table: str, *, create: bool) -> None:
    """Check that ``table`` fits and, unless told not to, create it (or upgrade it) and its companions.

    Creation is serialized by a transaction-level advisory lock, because
    ``CREATE TABLE IF NOT EXISTS`` run by two sessions at once can still fail
    on a unique violation in the catalog.
    """
    found = await _inspect(connection, table)
    columns = found.columns
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
    rules = pauses_table_name(table)
    if found.rule_columns and not found.rule_columns >= set(RULE_COLUMNS):
        raise ConfigurationError(
            f"table {rules!r} exists but is not the pause rules table of {table!r} (postgres_table_name), "
            "which pyncette-postgres keeps under that name: rename it or choose another postgres_table_name"
        )
    outdated = [f"column {name!r}" for name in (STATE_COLUMN, PAUSED_COLUMN) if columns and name not in columns]
    if columns and not found.rule_columns:
        outdated.append(f"table {rules!r}")
    if outdated and not create:
        raise ConfigurationError(
            f"table {table!r} (postgres_table_name) is from an earlier version and lacks {', '.join(outdated)}, "
            f"and postgres_skip_table_create is set: run {upgrade_ddl(table)!r} or unset postgres_skip_table_create"
        )
    if not create and not found.indexed:
        logger.warning(
            "table %r has no index %r: claiming due tasks will scan the whole table (see the README's DDL)",
            table,
            index_name(table),
        )
    elif not create and found.legacy_indexed:
        logger.warning(
            "index %r is no longer used (replaced by %r): drop it", legacy_index_name(table), index_name(table)
        )
    if create and (outdated or not found.indexed or found.legacy_indexed):
        if outdated or found.legacy_indexed:
            logger.info("upgrading table %r to this version's layout", table)
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key(table), timeout=SETUP_TIMEOUT)
            await connection.execute(_table_ddl(table) + upgrade_ddl(table), timeout=SETUP_TIMEOUT)
