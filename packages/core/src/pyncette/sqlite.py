"""The ``sqlite`` backend: a SQLite database file (``sqlite_database="pyncette.db"``), or one in memory.

It uses the standard library's :mod:`sqlite3` in a worker thread, so the
event loop never blocks on disk. Several processes can share one file: every
state change runs in a ``BEGIN IMMEDIATE`` transaction, which SQLite
serializes across processes, so a due record is claimed by one of them only.
With ``sqlite_database=":memory:"`` (the default) the database lives in the
process and is gone when the repository closes. Times are stored as integer
microseconds since the epoch.

Schema (``{table}`` is ``sqlite_table_name``)::

    CREATE TABLE {table} (
        parent TEXT NOT NULL, name TEXT NOT NULL, spec TEXT,
        scheduled_at INTEGER NOT NULL, locked_until INTEGER, locked_by TEXT,
        ready_at INTEGER NOT NULL,  -- max(scheduled_at, locked_until): when it can next be claimed
        state TEXT,  -- the runtime's JSON bookkeeping, stored verbatim
        paused INTEGER NOT NULL DEFAULT 0,  -- 1 while a pause rule matches the record
        PRIMARY KEY (parent, name)
    ) WITHOUT ROWID;
    CREATE INDEX {table}_ready ON {table} (parent, ready_at) WHERE paused = 0;  -- what claims read
    CREATE INDEX {table}_held ON {table} (parent, name) WHERE paused = 1;  -- what resume reads
    CREATE TABLE {table}_pauses (  -- the pause rules
        parent TEXT NOT NULL, match TEXT NOT NULL, prefix INTEGER NOT NULL, info TEXT,
        PRIMARY KEY (parent, match, prefix)
    ) WITHOUT ROWID;

A claim reads the range ``parent = ? AND ready_at <= now`` of the partial index of the records not held, so
held records cost it nothing (and the index is no wider than before pausing existed). ``pause`` stores the
rule and flags the records it matches with one ``UPDATE``; ``resume`` deletes it and recomputes the flag of
the held records it matched from the remaining rules with one ``UPDATE``; each is one ``BEGIN IMMEDIATE``
transaction. A record inserted by ``register`` gets its flag from an indexed ``EXISTS``
over the rules of its parent, in the same ``INSERT``. Rules match as plain text (byte prefixes of the
stored text, never ``LIKE``/``GLOB`` patterns).

A table created by an earlier 2.x version is upgraded when opened: it gets the ``state`` and ``paused``
columns (``ALTER TABLE ... ADD COLUMN``), its claim index is rebuilt as the partial index above, and the
``_held`` index and the rules table are created.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .abc import (
    PARKED_AT,
    Backend,
    Capabilities,
    Completion,
    Lease,
    LegacyRow,
    LegacyStore,
    PauseRule,
    Record,
    RegisterMode,
    Repository,
    SqlLegacyStore,
    backup_table_name,
    epoch_seconds,
    map_exceptions,
)
from .errors import BackendError, ConfigurationError
from .options import Custom, Identifier, Option, Options, Seconds, Settings

MEMORY = ":memory:"
DEFAULT_TABLE = "pyncette_tasks"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ERRORS: dict[type[BaseException], type[Exception]] = {
    sqlite3.DataError: ConfigurationError,
    sqlite3.Error: BackendError,
}
#: A stored row whose time fields are not integers (hand edits, a foreign writer) cannot be decoded.
_CORRUPT = "(typeof(scheduled_at) != 'integer' OR typeof(locked_until) NOT IN ('integer', 'null'))"

#: The pause rules table of records table ``{table}``.
_RULES = "{table}_pauses"
#: The claim index ``{table}_ready`` as it is created, and its columns in order.
_READY_INDEX = "CREATE INDEX {table}_ready ON {table} (parent, ready_at) WHERE paused = 0"
_READY_COLUMNS = ["parent", "ready_at"]

T = TypeVar("T")


def _starts_with(name: str, match: str) -> str:
    """SQL: text ``name`` starts with text ``match``, compared as the bytes of the stored text (no character
    is special, NUL included)."""
    return f"substr(CAST({name} AS BLOB), 1, length(CAST({match} AS BLOB))) = CAST({match} AS BLOB)"


def _held(rules: str, parent: str, name: str) -> str:
    """SQL: a rule in table ``rules`` matches the record ``(parent, name)`` (SQL expressions; ``name`` is
    used three times). ``match <= name`` holds for every matching rule and narrows the primary key range."""
    return (
        f"EXISTS (SELECT 1 FROM {rules} AS r WHERE r.parent = {parent} AND r.match <= {name} "
        f"AND (r.match = {name} OR r.prefix = 1 AND {_starts_with(name, 'r.match')}))"
    )


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` in code point order (which is the order
    of UTF-8 bytes), or ``None`` when there is none."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    following = ord(stripped[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be stored as text
        following = 0xE000
    return stripped[:-1] + chr(following)


def _matching(match: str, prefix: bool, utf8: bool) -> tuple[str, list[object]]:
    """SQL condition on the records of one parent that the rule ``(match, prefix)`` matches, and its parameters.

    A prefix becomes a primary key range (bounded above too when the database stores UTF-8, whose byte order
    is code point order), with the exact byte comparison on top.
    """
    if not prefix:
        return "name = ?", [match]
    if not match:
        return "1", []
    end = _prefix_end(match) if utf8 else None
    upper, bound = ("", []) if end is None else (" AND name < ?", [end])
    return f"name >= ?{upper} AND {_starts_with('name', '?')}", [match, *bound, match, match]


def _to_int(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _claimed(parent: str, row: tuple[Any, ...], lease_until: datetime, token: str) -> Record:
    """A claimed record from ``(name, spec, scheduled_at, state)`` (its lease is the claim's)."""
    name, spec, scheduled_at, state = row
    try:
        return Record(parent, name, spec, _from_int(scheduled_at), lease_until, token, None, state)
    except (TypeError, ValueError, OverflowError) as exc:
        return Record(parent, name, spec, PARKED_AT, lease_until, token, f"bad scheduled_at: {exc}", state)


def _record(row: tuple[Any, ...]) -> Record:
    """Decode a row of ``parent, name, spec, scheduled_at, locked_until, locked_by, state``; one that cannot be
    decoded comes back with ``corrupt`` set (see the contract)."""
    parent, name, spec, scheduled_at, locked_until, locked_by, state = row
    try:
        until = None if locked_until is None else _from_int(locked_until)
    except (TypeError, ValueError, OverflowError) as exc:
        reason = f"bad locked_until: {exc}"
        return Record(parent, name, spec, PARKED_AT, None, locked_by, corrupt=reason, state=state)
    try:
        return Record(parent, name, spec, _from_int(scheduled_at), until, locked_by, state=state)
    except (TypeError, ValueError, OverflowError) as exc:
        reason = f"bad scheduled_at: {exc}"
        return Record(parent, name, spec, PARKED_AT, until, locked_by, corrupt=reason, state=state)


def _from_int(micros: object) -> datetime:
    if not isinstance(micros, int):
        raise TypeError(f"expected integer microseconds, found {type(micros).__name__} {str(micros)[:40]!r}")
    return datetime.fromtimestamp(micros // 1_000_000, timezone.utc).replace(microsecond=micros % 1_000_000)


def _database(value: object) -> str:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError
    return value


def _register_statements(t: str, rules: str) -> tuple[str, str, str]:
    """``register``'s statements: overwrite (``FORCE``), insert when missing, and update an existing record."""
    # An inserted record is held when a rule matches it; an existing one keeps its flag (its name is the same).
    insert = (
        f"INSERT INTO {t} (parent, name, spec, scheduled_at, ready_at, state, paused) "
        f"VALUES (?, ?, ?, ?, ?, ?, {_held(rules, '?', '?')}) "
    )
    force = (
        f"{insert}ON CONFLICT (parent, name) DO UPDATE SET spec = excluded.spec, "
        "scheduled_at = excluded.scheduled_at, ready_at = excluded.scheduled_at, "
        "locked_until = NULL, locked_by = NULL, state = excluded.state"
    )
    # The sooner time wins unless a lease is live. A row whose time fields cannot be decoded is overwritten as if
    # it were missing.
    update = (
        f"UPDATE {t} SET spec = ?, "
        f"scheduled_at = CASE WHEN {_CORRUPT} THEN ? ELSE min(scheduled_at, ?) END, "
        f"ready_at = CASE WHEN {_CORRUPT} THEN ? "
        "ELSE max(min(scheduled_at, ?), coalesce(locked_until, 0)) END, "
        f"locked_until = CASE WHEN {_CORRUPT} THEN NULL ELSE locked_until END, "
        f"locked_by = CASE WHEN {_CORRUPT} THEN NULL ELSE locked_by END, "
        f"state = CASE WHEN {_CORRUPT} THEN ? ELSE state END "
        "WHERE parent = ? AND name = ? "
        f"AND (locked_until IS NULL OR locked_until <= ? OR {_CORRUPT})"
    )
    return force, f"{insert}ON CONFLICT (parent, name) DO NOTHING", update


class _Statements:
    """The statements of :class:`SqliteRepository` whose text depends on its tables only, built once."""

    def __init__(self, t: str, rules: str) -> None:
        columns = "parent, name, spec, scheduled_at, locked_until, locked_by, state"
        self.register_force, self.register_new, self.register_update = _register_statements(t, rules)
        self.claim_due = (
            f"SELECT name, spec, scheduled_at, state FROM {t} WHERE parent = ? AND paused = 0 "
            "AND ready_at <= ? ORDER BY ready_at LIMIT ?"
        )
        self.claim_lease = (
            f"UPDATE {t} SET locked_until = ?, locked_by = ?, ready_at = max(scheduled_at, ?) "
            "WHERE parent = ? AND name = ?"
        )
        self.commit_delete = f"DELETE FROM {t} WHERE parent = ? AND name = ? AND locked_by = ?"
        self.commit_release = (
            f"UPDATE {t} SET scheduled_at = ?, ready_at = ?, locked_until = NULL, locked_by = NULL, "
            "state = coalesce(?, state) WHERE parent = ? AND name = ? AND locked_by = ?"
        )
        self.commit_keep = (
            f"UPDATE {t} SET scheduled_at = ?, ready_at = max(?, coalesce(locked_until, 0)), "
            "state = coalesce(?, state) WHERE parent = ? AND name = ? AND locked_by = ?"
        )
        self.unlock = (
            f"UPDATE {t} SET locked_until = NULL, locked_by = NULL, ready_at = scheduled_at "
            "WHERE parent = ? AND name = ? AND locked_by = ?"
        )
        self.extend = (
            f"UPDATE {t} SET locked_until = ?, ready_at = max(scheduled_at, ?) "
            "WHERE parent = ? AND name = ? AND locked_by = ?"
        )
        self.delete = f"DELETE FROM {t} WHERE parent = ? AND name = ?"
        self.get = f"SELECT {columns} FROM {t} WHERE parent = ? AND name = ?"
        self.list_page = f"SELECT {columns} FROM {t} WHERE parent = ? AND name > ? ORDER BY name LIMIT ?"
        self.add_rule = (
            f"INSERT INTO {rules} (parent, match, prefix, info) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (parent, match, prefix) DO UPDATE SET info = excluded.info"
        )
        self.remove_rule = f"DELETE FROM {rules} WHERE parent = ? AND match = ? AND prefix = ?"
        self.pauses = f"SELECT match, prefix, info FROM {rules} WHERE parent = ?"
        self.reschedule = (
            f"UPDATE {t} SET scheduled_at = ?, ready_at = max(?, coalesce(locked_until, 0)), "
            "state = coalesce(?, state) WHERE parent = ? AND name = ? AND scheduled_at = ? "
            "AND (locked_until IS NULL OR locked_until <= ?)"
        )
        self.write_raw_spec = f"UPDATE {t} SET spec = ? WHERE parent = ? AND name = ?"
        self.corrupt = f"UPDATE {t} SET scheduled_at = 'garbage' WHERE parent = ? AND name = ?"


class SqliteRepository(Repository):
    """Records in one table of a SQLite file."""

    def __init__(self, connection: sqlite3.Connection, table: str, *, utf8: bool = True) -> None:
        self._db = connection
        self._table = table
        self._rules = _RULES.format(table=table)
        self._utf8 = utf8  # the database stores text as UTF-8 (see _matching)
        self._lock = anyio.Lock()
        self._sql = _Statements(table, self._rules)

    async def _call(self, what: str, func: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            with map_exceptions(_ERRORS, f"sqlite {what}"):
                return await anyio.to_thread.run_sync(func, self._db)

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        sql = self._sql
        now_i = _to_int(now)

        def work(db: sqlite3.Connection) -> list[bool]:
            results = []
            with db:
                db.execute("BEGIN IMMEDIATE")
                for r in records:
                    at = _to_int(r.scheduled_at)
                    inserted = (r.parent, r.name, r.spec, at, at, r.state, r.parent, r.name, r.name, r.name)
                    if mode is RegisterMode.FORCE:
                        db.execute(sql.register_force, inserted)
                        results.append(True)
                        continue
                    cursor = db.execute(sql.register_new, inserted)
                    if cursor.rowcount == 1 or mode is RegisterMode.CREATE:
                        results.append(cursor.rowcount == 1)
                        continue
                    cursor = db.execute(sql.register_update, (r.spec, at, at, at, at, r.state, r.parent, r.name, now_i))
                    results.append(cursor.rowcount == 1)
            return results

        return await self._call("register", work)

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        sql = self._sql
        now_i, until_i = _to_int(now), _to_int(lease_until)

        def work(db: sqlite3.Connection) -> list[Record]:
            with db:
                db.execute("BEGIN IMMEDIATE")
                rows = db.execute(sql.claim_due, (parent, now_i, limit)).fetchall()
                db.executemany(sql.claim_lease, [(until_i, token, until_i, parent, row[0]) for row in rows])
            return [_claimed(parent, row, lease_until, token) for row in rows]

        return await self._call("claim", work)

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        sql = self._sql

        def work(db: sqlite3.Connection) -> list[bool]:
            results = []
            with db:
                db.execute("BEGIN IMMEDIATE")
                for c in completions:
                    if c.next_at is None:
                        cursor = db.execute(sql.commit_delete, (c.parent, c.name, c.token))
                    else:
                        at = _to_int(c.next_at)
                        cursor = db.execute(
                            sql.commit_release if c.release else sql.commit_keep,
                            (at, at, c.state, c.parent, c.name, c.token),
                        )
                    results.append(cursor.rowcount == 1)
            return results

        return await self._call("commit", work)

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        sql = self._sql

        def work(db: sqlite3.Connection) -> list[bool]:
            with db:
                db.execute("BEGIN IMMEDIATE")
                return [
                    db.execute(sql.unlock, (lease.parent, lease.name, lease.token)).rowcount == 1 for lease in leases
                ]

        return await self._call("unlock", work)

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        sql = self._sql
        until_i = _to_int(lease_until)

        def work(db: sqlite3.Connection) -> bool:
            with db:
                cursor = db.execute(sql.extend, (until_i, until_i, lease.parent, lease.name, lease.token))
            return cursor.rowcount == 1

        return await self._call("extend", work)

    async def delete(self, parent: str, name: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            with db:
                cursor = db.execute(self._sql.delete, (parent, name))
            return cursor.rowcount == 1

        return await self._call("delete", work)

    async def get(self, parent: str, name: str) -> Record | None:
        def work(db: sqlite3.Connection) -> Record | None:
            row = db.execute(self._sql.get, (parent, name)).fetchone()
            return None if row is None else _record(row)

        return await self._call("get", work)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        def work(db: sqlite3.Connection) -> list[Record]:
            rows = db.execute(self._sql.list_page, (parent, continuation or "", limit + 1)).fetchall()
            return [_record(row) for row in rows]

        records = await self._call("list", work)
        if len(records) > limit:
            return records[:limit], records[limit - 1].name
        return records, None

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        condition, params = _matching(rule.match, rule.prefix, self._utf8)

        def work(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(self._sql.add_rule, (rule.parent, rule.match, int(rule.prefix), rule.info))
                cursor = db.execute(
                    f"UPDATE {self._table} SET paused = 1 WHERE parent = ? AND {condition}", (rule.parent, *params)
                )
            return cursor.rowcount

        return await self._call("pause", work)

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        t = self._table
        condition, params = _matching(match, prefix, self._utf8)

        def work(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("BEGIN IMMEDIATE")
                cursor = db.execute(self._sql.remove_rule, (parent, match, int(prefix)))
                if cursor.rowcount == 0:
                    return False
                # The records the rule matched are held still when another rule matches them. Only held records
                # are read (the planner, knowing no counts, would read every record of the parent instead).
                db.execute(
                    f"UPDATE {t} INDEXED BY {t}_held SET paused = {_held(self._rules, f'{t}.parent', f'{t}.name')} "
                    f"WHERE parent = ? AND paused = 1 AND {condition}",
                    (parent, *params),
                )
            return True

        return await self._call("resume", work)

    async def pauses(self, parent: str) -> list[PauseRule]:
        def work(db: sqlite3.Connection) -> list[PauseRule]:
            rows = db.execute(self._sql.pauses, (parent,))
            return [PauseRule(parent, match, bool(prefix), info) for match, prefix, info in rows]

        return await self._call("pauses", work)

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        at, expected_i, now_i = _to_int(scheduled_at), _to_int(expected), _to_int(now)

        def work(db: sqlite3.Connection) -> bool:
            with db:
                cursor = db.execute(self._sql.reschedule, (at, at, state, parent, name, expected_i, now_i))
            return cursor.rowcount == 1

        return await self._call("reschedule", work)

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        t = self._table
        # A skip scan of the primary key: one seek per parent, however many records each has.
        first, params = (
            (f"SELECT min(parent) FROM {t}", [])
            if continuation is None
            else (f"SELECT min(parent) FROM {t} WHERE parent > ?", [continuation])
        )

        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                f"WITH RECURSIVE found(parent) AS (VALUES (({first})) UNION ALL "
                f"SELECT (SELECT min(parent) FROM {t} WHERE parent > found.parent) FROM found "
                "WHERE found.parent IS NOT NULL LIMIT ?) "
                "SELECT parent FROM found WHERE parent IS NOT NULL",
                (*params, limit + 1),
            )
            return [str(row[0]) for row in rows]

        found = await self._call("parents", work)
        if len(found) > limit:
            return found[:limit], found[limit - 1]
        return found, None

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute(self._sql.write_raw_spec, (raw, parent, name))

        await self._call("write_raw_spec", work)

    async def corrupt(self, parent: str, name: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute(self._sql.corrupt, (parent, name))

        await self._call("corrupt", work)


class SqliteLegacyStore(SqlLegacyStore):
    """A Pyncette 1.x table in a SQLite file: ``name`` (the key), ``parent_name``, ``task_spec`` and times as
    float seconds. It is set aside by renaming it to :func:`~pyncette.abc.backup_table_name`."""

    _COLUMNS = "name, parent_name, task_spec, execute_after, locked_until, locked_by"

    def __init__(self, connection: sqlite3.Connection | None, database: str, table: str) -> None:
        super().__init__(table, backup_table_name(table), f"SQLite database {database!r}")
        self._db = connection  # None: the file does not exist
        self._database = database
        self._lock = anyio.Lock()

    async def _call(self, what: str, func: Callable[[sqlite3.Connection], T]) -> T:
        assert self._db is not None
        async with self._lock:
            with map_exceptions(_ERRORS, f"sqlite 1.x migration: {what}"):
                return await anyio.to_thread.run_sync(func, self._db)

    async def _columns(self, table: str) -> set[str]:
        if self._db is None:
            return set()

        def work(db: sqlite3.Connection) -> set[str]:
            return {str(row[0]) for row in db.execute("SELECT name FROM pragma_table_info(?)", (table,))}

        return await self._call(f"inspecting table {table!r}", work)

    async def live_leases(self, now: datetime) -> int:
        def work(db: sqlite3.Connection) -> int:
            sql = f'SELECT count(*) FROM "{self._table}" WHERE locked_until > ?'
            return int(db.execute(sql, (now.timestamp(),)).fetchone()[0])

        return await self._call("counting leases", work)

    async def set_aside(self) -> None:
        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(f'ALTER TABLE "{self._table}" RENAME TO "{self._backup}"')

        await self._call(f"renaming table {self._table!r} to {self._backup!r}", work)

    def rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._pages(self._backup, batch)

    def live_rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._pages(self._table, batch)

    async def _pages(self, table: str, batch: int) -> AsyncIterator[list[LegacyRow]]:
        after: str | None = None
        while True:
            where = "" if after is None else "WHERE name > ? "

            def work(db: sqlite3.Connection, where: str = where, after: str | None = after) -> list[Any]:
                sql = f'SELECT {self._COLUMNS} FROM "{table}" {where}ORDER BY name LIMIT ?'
                return db.execute(sql, (batch,) if after is None else (after, batch)).fetchall()

            page = await self._call(f"reading table {table!r}", work)
            if not page:
                return
            yield [self._row(row) for row in page]
            if len(page) < batch:
                return
            after = page[-1][0]

    @staticmethod
    def _row(row: tuple[Any, ...]) -> LegacyRow:
        name, parent, spec, execute_after, locked_until, locked_by = row
        until = epoch_seconds(locked_until, "locked_until", name)
        return LegacyRow(
            str(name),
            parent,
            spec,
            epoch_seconds(execute_after, "execute_after", name),
            until,
            None if until is None else locked_by,  # 1.x wrote the text "None" when it released a lease
        )

    async def drop_backup(self) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(f'DROP TABLE IF EXISTS "{self._backup}"')

        await self._call(f"dropping table {self._backup!r}", work)


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[0]) for row in db.execute("SELECT name FROM pragma_table_info(?)", (table,))]


def _create_or_upgrade(db: sqlite3.Connection, table: str, database: str) -> None:
    """Create the tables, or bring ones created by an earlier 2.x version up to date, in one transaction.

    The earlier layouts lack the ``state`` column (nullable: old rows read as no state), the ``paused`` column
    (old rows are not held), the rules table and the ``{table}_held`` index, and have the index
    ``{table}_ready`` on ``(parent, ready_at)`` over every row or on ``(parent, paused, ready_at)``; it is
    rebuilt as a partial index of the rows not held. ``BEGIN IMMEDIATE`` makes processes opening the file
    together take turns.
    """
    rules = _RULES.format(table=table)
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (parent TEXT NOT NULL, name TEXT NOT NULL, spec TEXT, "
            "scheduled_at INTEGER NOT NULL, locked_until INTEGER, locked_by TEXT, ready_at INTEGER NOT NULL, "
            "state TEXT, paused INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (parent, name)) WITHOUT ROWID"
        )
        columns = _columns(db, table)
        if "state" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN state TEXT")
        if "paused" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN paused INTEGER NOT NULL DEFAULT 0")
        indexed = [str(row[0]) for row in db.execute("SELECT name FROM pragma_index_info(?)", (f"{table}_ready",))]
        partial = db.execute(
            "SELECT partial FROM pragma_index_list(?) WHERE name = ?", (table, f"{table}_ready")
        ).fetchall()
        if indexed != _READY_COLUMNS or partial != [(1,)]:
            db.execute(f"DROP INDEX IF EXISTS {table}_ready")
            db.execute(_READY_INDEX.format(table=table))
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}_held ON {table} (parent, name) WHERE paused = 1")
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {rules} (parent TEXT NOT NULL, match TEXT NOT NULL, "
            "prefix INTEGER NOT NULL, info TEXT, PRIMARY KEY (parent, match, prefix)) WITHOUT ROWID"
        )
        if _columns(db, rules) != ["parent", "match", "prefix", "info"]:
            raise ConfigurationError(
                f"table {rules!r} in SQLite database {database!r} is not the pause rules of table {table!r}: "
                "rename it, or choose another sqlite_table_name"
            )


class SqliteBackend(Backend):
    """``sqlite``: a SQLite database file shared by the processes of one host, or one in memory."""

    name = "sqlite"
    capabilities = Capabilities(persistent=True, coordinated=True, control=True)
    options = Options(
        Option(
            "sqlite_database",
            Custom(_database, "a file path, or ':memory:'", "path"),
            "path of the database file; ':memory:' keeps it in this process until the repository closes",
            default=MEMORY,
        ),
        Option(
            "sqlite_table_name",
            Identifier(r"[A-Za-z_][A-Za-z0-9_]{0,62}", "1-63 letters, digits or underscores, not first a digit"),
            "table name",
            default=DEFAULT_TABLE,
            isolates=True,
        ),
        Option("sqlite_timeout", Seconds(), "seconds to wait for another process's write lock", default=30.0),
    )

    def capabilities_for(self, settings: Settings) -> Capabilities:
        if settings["sqlite_database"] == MEMORY:
            return Capabilities(control=True)
        return self.capabilities

    def isolated_options(self, unique: str, workdir: Path) -> dict[str, Any]:
        return {**super().isolated_options(unique, workdir), "sqlite_database": str(workdir / f"{unique}.db")}

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Repository]:
        database, table, timeout = (settings[f"sqlite_{key}"] for key in ("database", "table_name", "timeout"))

        def set_up(db: sqlite3.Connection) -> bool:
            """Prepare the database; whether it stores text as UTF-8."""
            if database != MEMORY:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            _create_or_upgrade(db, table, database)
            return str(db.execute("PRAGMA encoding").fetchone()[0]).upper() == "UTF-8"

        def connect() -> tuple[sqlite3.Connection, bool]:
            db = sqlite3.connect(database, timeout=timeout, isolation_level=None, check_same_thread=False)
            # Switching a new file to WAL can report "database is locked" without waiting for the busy
            # timeout when another process is setting it up at the same moment: retry until the timeout.
            deadline = time.monotonic() + timeout
            try:
                while True:
                    try:
                        return db, set_up(db)
                    except sqlite3.OperationalError as exc:
                        if "locked" not in str(exc) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            except BaseException:
                db.close()
                raise

        with map_exceptions(_ERRORS, f"opening sqlite database {database!r}"):
            connection, utf8 = await anyio.to_thread.run_sync(connect)
        try:
            yield SqliteRepository(connection, table, utf8=utf8)
        finally:
            await anyio.to_thread.run_sync(connection.close)

    @contextlib.asynccontextmanager
    async def legacy(self, settings: Settings) -> AsyncIterator[LegacyStore]:
        """The 1.x table of the same name in the same file (never created here: a missing file has none)."""
        database, table, timeout = (settings[f"sqlite_{key}"] for key in ("database", "table_name", "timeout"))

        def connect() -> sqlite3.Connection | None:
            if database == MEMORY:
                return None
            path = Path(database).absolute()
            if not path.exists():
                return None
            return sqlite3.connect(
                f"{path.as_uri()}?mode=rw", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
            )

        with map_exceptions(_ERRORS, f"opening sqlite database {database!r}"):
            connection = await anyio.to_thread.run_sync(connect)
        try:
            yield SqliteLegacyStore(connection, database, table)
        finally:
            if connection is not None:
                await anyio.to_thread.run_sync(connection.close)

    async def purge(self, settings: Settings) -> None:
        database, table, timeout = (settings[f"sqlite_{key}"] for key in ("database", "table_name", "timeout"))
        if database == MEMORY:
            return

        def drop() -> None:
            with contextlib.closing(sqlite3.connect(database, timeout=timeout, isolation_level=None)) as db:
                db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute(f"DROP TABLE IF EXISTS {_RULES.format(table=table)}")

        await anyio.to_thread.run_sync(drop)


backend = SqliteBackend()
#: Pyncette 1.x name of the factory.
sqlite_repository = backend

__all__ = ["SqliteBackend", "SqliteLegacyStore", "SqliteRepository", "backend", "sqlite_repository"]
