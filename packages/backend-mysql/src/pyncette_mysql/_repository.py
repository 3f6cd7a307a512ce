"""The MySQL / MariaDB repository: records in one InnoDB table, batched transitions.

Every connection runs with ``autocommit`` on, READ COMMITTED isolation, the
UTC session time zone and multi-statement queries. A transaction is sent as
one query string (``START TRANSACTION; ...; COMMIT``), so a batch costs a
constant number of round trips: one for single-statement operations, two for
the ones that must read locked rows before deciding what to write.

Values are escaped with the driver's ``escape`` (which honours
``NO_BACKSLASH_ESCAPES``); the table name was validated against a strict
pattern before it got here. Times are written as UTC literals, and the pool's
decoders read DATETIME columns back as aware UTC datetimes, or as the raw text
when the stored value is not a valid date (a zero date written by a session
without strict mode, say): such a record is returned with ``corrupt`` set.

Pausing: rules live in ``<table>_pauses``; a record some rule matches has
``paused = 1``, and claims walk the ``(parent, paused, scheduled_at)`` index at
``paused = 0`` only, so a held record costs a claim nothing. ``pause`` stores
its rule and marks the records it matches, ``resume`` deletes its rule and
recomputes ``paused`` for the records it matched, each as one transaction in
one round trip. ``register`` marks the records it inserts that a rule matches,
in the transaction that inserts them (see :meth:`MySQLRepository._hold`).
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

import aiomysql

from pyncette.abc import PARKED_AT, Completion, Lease, PauseRule, Record, RegisterMode, Repository, map_exceptions
from pyncette.errors import BackendError, ConfigurationError
from pyncette.redaction import get_logger

from ._schema import (
    GUARD_ROW,
    MAX_KEY_CHARS,
    MAX_SPEC_BYTES,
    MAX_TOKEN_CHARS,
    NAME_RULE,
    PREFIX_RULE,
    Upsert,
    pauses_table_name,
    prefix_range,
    quote_table,
)

T = TypeVar("T")

logger = get_logger("pyncette.mysql")

#: Deadlock, lock wait timeout, and a duplicate key from a concurrent insert: the transaction is retried.
RETRYABLE_CODES = frozenset({1213, 1205, 1062})
#: Values the server refuses (out of range, too long, not a valid date or string, a statement larger than
#: ``max_allowed_packet``): retrying cannot help, so they are ConfigurationError.
REFUSED_CODES = frozenset({1153, 1264, 1265, 1292, 1366, 1406})
#: The server does not know the connection id (it is already gone).
UNKNOWN_THREAD = 1094
#: Tries per transaction before the error is raised as BackendError.
ATTEMPTS = 5
#: Records per transaction; larger batches are split (each record stays atomic).
BATCH_ROWS = 1000
#: Spec characters per register transaction, to stay well below ``max_allowed_packet``.
BATCH_SPEC_CHARS = 2_000_000
#: Parents per key-lookup statement: an OR of many ``parent = ? AND name IN (...)`` groups makes the
#: range optimizer's work grow quadratically, so larger sets are split over several statements.
PARENTS_PER_STATEMENT = 16

ERRORS: dict[type[BaseException], type[Exception]] = {
    aiomysql.DataError: ConfigurationError,
    aiomysql.MySQLError: BackendError,
    OSError: BackendError,
    asyncio.TimeoutError: BackendError,
    UnicodeError: ConfigurationError,
}

_SELECT_COLUMNS = "`name`, `spec`, `scheduled_at`, `locked_until`, `locked_by`, `state`"
_ALL_COLUMNS = "`parent`, `name`, `spec`, `scheduled_at`, `locked_until`, `locked_by`, `state`"
_RULE_COLUMNS = "`parent`, `kind`, `match`, `info`"

Row = tuple[Any, ...]
Escape = Callable[[Any], str]
Connect = Callable[[], Awaitable[Any]]


class QuietCursor(aiomysql.Cursor):  # type: ignore[misc]
    """A cursor that does not run ``SHOW WARNINGS`` (an extra round trip) after statements with notes,
    such as ``CREATE TABLE IF NOT EXISTS`` on an existing table."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


class Result(NamedTuple):
    """One statement's outcome: affected (matched) rows and fetched rows."""

    rowcount: int
    rows: list[Row]


def error_code(exc: BaseException | None) -> int | None:
    """The MySQL error number of a driver exception, if any."""
    if isinstance(exc, aiomysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def refused_certificate(exc: BaseException | None) -> str | None:
    """Why the server's TLS certificate was refused, if that is what failed a connection.

    aiomysql reports it as "Can't connect" (2003), with the verification error as the cause.
    """
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return str(exc.verify_message or exc)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def classify(exc: BackendError) -> Exception:
    """A mapped driver error as the caller must see it: ConfigurationError when retrying cannot help."""
    cause = exc.__cause__
    if error_code(cause) in REFUSED_CODES:
        return ConfigurationError(str(exc))
    reason = refused_certificate(cause)
    if reason is not None:
        return ConfigurationError(
            f"{exc} (the server's TLS certificate failed verification: {reason}; check mysql_ssl)"
        )
    return exc


async def run(conn: Any, *statements: str) -> list[Result]:
    """Send ``statements`` as one multi-statement query (one round trip) and collect every result."""
    async with conn.cursor(QuietCursor) as cursor:
        await cursor.execute(";\n".join(statements))
        results = [Result(cursor.rowcount, list(await cursor.fetchall()))]
        while await cursor.nextset():
            results.append(Result(cursor.rowcount, list(await cursor.fetchall())))
    return results


def decode(
    parent: str,
    name: str,
    spec: str | None,
    scheduled_at: object,
    locked_until: object,
    locked_by: str | None,
    state: str | None = None,
) -> Record:
    """A record from stored values; times that are not valid dates make it ``corrupt`` (see the contract)."""
    problems = []
    if not isinstance(scheduled_at, datetime):
        problems.append(f"scheduled_at {str(scheduled_at)[:40]!r} is not a valid time")
        scheduled_at = PARKED_AT
    if locked_until is not None and not isinstance(locked_until, datetime):
        problems.append(f"locked_until {str(locked_until)[:40]!r} is not a valid time")
        locked_until = None
    corrupt = "; ".join(problems) or None
    return Record(parent, name, spec, scheduled_at, locked_until, locked_by, corrupt=corrupt, state=state)


def time_literal(moment: datetime) -> str:
    """A DATETIME(6) literal in UTC (naive values are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return f"'{moment.isoformat(' ', 'microseconds')}'"


def key_filters(esc: Escape, keys: Sequence[tuple[str, str]]) -> list[str]:
    """WHERE conditions matching exactly ``keys``, one per statement, in primary-key order."""
    by_parent: dict[str, list[str]] = {}
    for parent, name in sorted(keys):
        by_parent.setdefault(parent, []).append(name)
    groups = [
        f"(`parent` = {esc(parent)} AND `name` IN ({', '.join(map(esc, names))}))"
        for parent, names in by_parent.items()
    ]
    return [" OR ".join(groups[i : i + PARENTS_PER_STATEMENT]) for i in range(0, len(groups), PARENTS_PER_STATEMENT)]


def claim_query(table: str, esc: Escape, parent: str, now: datetime, limit: int) -> str:
    """The locking due-work query; it walks the ``(parent, paused, scheduled_at)`` index from the oldest entry
    among the records no pause holds."""
    at = time_literal(now)
    return (
        f"SELECT `name`, `spec`, `scheduled_at`, `state` FROM {quote_table(table)} "
        f"WHERE `parent` = {esc(parent)} AND `paused` = 0 AND `scheduled_at` <= {at} "
        f"AND (`locked_until` IS NULL OR `locked_until` <= {at}) "
        f"ORDER BY `scheduled_at`, `name` LIMIT {int(limit)} FOR UPDATE SKIP LOCKED"
    )


def list_query(table: str, esc: Escape, parent: str, continuation: str | None, limit: int) -> str:
    """One page of a parent's records in name order, walking the primary key."""
    after = "" if continuation is None else f" AND `name` > {esc(continuation)}"
    return (
        f"SELECT {_SELECT_COLUMNS} FROM {quote_table(table)} WHERE `parent` = {esc(parent)}{after} "
        f"ORDER BY `name` LIMIT {int(limit)}"
    )


def rule_filter(esc: Escape, match: str, *, prefix: bool, ordered: bool) -> str:
    """The condition on ``name`` that selects the records the rule ``(match, prefix)`` holds (within its parent).

    Plain text: ``match`` is an escaped value, never a pattern. With a collation in code-point order (``ordered``)
    a prefix also bounds the primary-key range, so the statement reads only the records it matches.
    """
    if not prefix:
        return f"`name` = {esc(match)}"
    if not match:
        return "TRUE"
    length = len(match)
    bounds = []
    if ordered:
        low, high = prefix_range(match)
        bounds.append(f"`name` >= {esc(low)}")
        if high is not None:
            bounds.append(f"`name` < {esc(high)}")
    # The length test keeps a PAD SPACE collation from taking "a" for the prefix "a ".
    return " AND ".join([*bounds, f"CHAR_LENGTH(`name`) >= {length}", f"LEFT(`name`, {length}) = {esc(match)}"])


def held_condition(table: str, rules: str, parent: str) -> str:
    """True for a row of ``table`` (quoted) that a rule in ``rules`` (quoted) holds; ``parent`` is the row's parent
    as SQL (a column or an escaped value). One primary-key range of ``rules`` per row."""
    name = f"{table}.`name`"
    return (
        f"EXISTS (SELECT 1 FROM {rules} AS `r` WHERE `r`.`parent` = {parent} AND ("
        f"(`r`.`kind` = {NAME_RULE} AND `r`.`match` = {name}) OR "
        f"(`r`.`kind` = {PREFIX_RULE} AND CHAR_LENGTH({name}) >= CHAR_LENGTH(`r`.`match`) "
        f"AND LEFT({name}, CHAR_LENGTH(`r`.`match`)) = `r`.`match`)))"
    )


def _first_occurrences(keys: Sequence[tuple[str, str]]) -> list[int]:
    """Indexes of the first occurrence of each key (later duplicates act on an already changed record)."""
    seen: set[tuple[str, str]] = set()
    firsts = []
    for index, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            firsts.append(index)
    return firsts


def _rounds(records: Sequence[Record]) -> Iterator[list[int]]:
    """Split record indexes into rounds without repeated keys, keeping each key's order."""
    pending = list(range(len(records)))
    while pending:
        seen: set[tuple[str, str]] = set()
        current: list[int] = []
        later: list[int] = []
        for index in pending:
            key = (records[index].parent, records[index].name)
            (later if key in seen else current).append(index)
            seen.add(key)
        yield current
        pending = later


def _chunks(indexes: list[int], records: Sequence[Record]) -> Iterator[list[int]]:
    chunk: list[int] = []
    size = 0
    for index in indexes:
        spec = records[index].spec
        weight = len(spec) if spec is not None else 0
        if chunk and (len(chunk) >= BATCH_ROWS or size + weight > BATCH_SPEC_CHARS):
            yield chunk
            chunk, size = [], 0
        chunk.append(index)
        size += weight
    if chunk:
        yield chunk


def _check_key(what: str, value: str) -> None:
    if len(value) > MAX_KEY_CHARS:
        raise ConfigurationError(
            f"{what} is {len(value)} characters long; the MySQL backend stores at most {MAX_KEY_CHARS}: "
            f"{value[:40]!r}..."
        )


def _check_record(record: Record) -> None:
    _check_key("task parent", record.parent)
    _check_key("task name", record.name)
    spec = record.spec
    if spec is not None and len(spec) * 4 > MAX_SPEC_BYTES and len(spec.encode("utf-8")) > MAX_SPEC_BYTES:
        raise ConfigurationError(
            f"spec of task {record.name!r} is larger than {MAX_SPEC_BYTES} bytes (MEDIUMTEXT), "
            "the MySQL backend's limit"
        )


class MySQLRepository(Repository):
    """Records in one InnoDB table (and pause rules in a second one) reached through an ``aiomysql`` pool.

    ``ordered``: the key columns' collation orders strings by code point (see :func:`rule_filter`).
    """

    def __init__(
        self,
        pool: Any,
        table: str,
        upsert: Upsert,
        where: str,
        command_timeout: float,
        connect: Connect,
        *,
        ordered: bool = False,
    ) -> None:
        self._pool = pool
        self._table = table
        self._t = quote_table(table)
        self._r = quote_table(pauses_table_name(table))
        self._ordered = ordered
        self._upsert = upsert
        self._where = where
        self._timeout = command_timeout
        #: Opens a connection outside the pool (for the testing hooks).
        self._connect = connect

    # -- plumbing ------------------------------------------------------------------------------

    async def _transaction(self, what: str, body: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``body(connection)``, retrying deadlocks and lock wait timeouts a few times."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with map_exceptions(ERRORS, f"mysql {what} ({self._where})"):
                    try:
                        return await asyncio.wait_for(self._attempt(body), self._timeout)
                    except asyncio.TimeoutError:
                        # Cancelling closed the connection, so the pool drops it and the server rolls back.
                        raise BackendError(
                            f"mysql {what} ({self._where}) timed out after {self._timeout:g} s"
                        ) from None
            except BackendError as exc:
                classified = classify(exc)
                if classified is not exc:
                    raise classified from exc.__cause__
                if attempt >= ATTEMPTS or error_code(exc.__cause__) not in RETRYABLE_CODES:
                    raise
                logger.debug("retrying mysql %s (attempt %d): %s", what, attempt, exc)
            await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)

    async def _attempt(self, body: Callable[[Any], Awaitable[T]]) -> T:
        async with self._pool.acquire() as conn:
            try:
                return await body(conn)
            except BaseException as exc:
                await self._reset(conn, exc)
                raise

    @staticmethod
    async def _reset(conn: Any, exc: BaseException) -> None:
        """Make a connection safe to reuse after a failure, or close it so the pool drops it."""
        if conn.closed:
            return
        code = error_code(exc)
        if code is not None and code > 0 and not 2000 <= code < 3000:  # 2xxx are the client library's
            # The server refused a statement; the session is intact but may be inside a transaction.
            try:
                await conn.rollback()
                return
            except Exception:
                conn.close()  # e.g. the connection was killed: the caller raises the original error
                return
            except BaseException:
                conn.close()
                raise
        conn.close()

    async def _lock_rows(self, conn: Any, columns: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        """Open a transaction and lock the existing rows among ``keys`` (first round trip)."""
        statements = [
            f"SELECT `parent`, `name`, {columns} FROM {self._t} WHERE {condition} FOR UPDATE"
            for condition in key_filters(conn.escape, keys)
        ]
        results = await run(conn, "START TRANSACTION", *statements)
        return {(row[0], row[1]): row[2:] for result in results[1:] for row in result.rows}

    def _hold(self, esc: Escape, keys: Sequence[tuple[str, str]]) -> list[str]:
        """Statements that mark the rows ``keys``, just written in this transaction, held when a rule matches them.

        Run after the rows are written, never before: a pause locks the rows it matches with a locking read (which
        waits for rows being inserted; a plain ``UPDATE`` in READ COMMITTED would pass over them), and this takes
        a shared lock on the parents' rule rows (which waits for a pause or resume in progress: both write the
        parent's guard row). Whichever of the two comes second sees the other's write, so a record inserted while
        a pause commits is held all the same. With no rule for these parents the ``UPDATE`` reads nothing (its
        uncorrelated ``EXISTS`` is false, which the server sees before touching a row).
        """
        parents = ", ".join(map(esc, sorted({parent for parent, _ in keys})))
        gate = f"EXISTS (SELECT 1 FROM {self._r} AS `g` WHERE `g`.`parent` IN ({parents}) AND `g`.`kind` < {GUARD_ROW})"
        held = held_condition(self._t, self._r, f"{self._t}.`parent`")
        return [
            f"SELECT COUNT(*) FROM {self._r} WHERE `parent` IN ({parents}) LOCK IN SHARE MODE",
            *(
                f"UPDATE {self._t} SET `paused` = 1 WHERE ({condition}) AND {gate} AND {held}"
                for condition in key_filters(esc, keys)
            ),
        ]

    def _guard(self, esc: Escape, parent: str, *rules: str) -> str:
        """The upsert that writes the parent's guard row (and ``rules``, rendered rows), locking it: pause and
        resume start with it, so the rule changes of one parent never interleave."""
        new = self._upsert.new
        rows = [f"({esc(parent)}, {GUARD_ROW}, '', NULL)", *rules]
        return self._upsert.statement(self._r, _RULE_COLUMNS, rows, f"`info` = {new('info')}")

    # -- the contract --------------------------------------------------------------------------

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        for record in records:
            _check_record(record)
        results = [False] * len(records)
        if mode is RegisterMode.FORCE:
            # Later duplicates overwrite earlier ones, as applying them in order would.
            for chunk in _chunks(list(range(len(records))), records):
                await self._transaction("register", functools.partial(self._force, records=records, chunk=chunk))
                for index in chunk:
                    results[index] = True
            return results
        for indexes in _rounds(records):
            for chunk in _chunks(indexes, records):
                merge = functools.partial(self._merge, records=records, chunk=chunk, now=now, mode=mode)
                written = await self._transaction("register", merge)
                for index, flag in zip(chunk, written, strict=True):
                    results[index] = flag
        return results

    def _overwrite(self, esc: Escape, records: Sequence[Record]) -> str:
        """The upsert that stores ``records`` whole, clearing any lease (FORCE, and corrupt rows in UPDATE)."""
        new = self._upsert.new
        # Sorted for a consistent lock order; the sort is stable, so a repeated key's last record still wins.
        rows = [
            f"({esc(r.parent)}, {esc(r.name)}, {esc(r.spec)}, {time_literal(r.scheduled_at)}, NULL, NULL, "
            f"{esc(r.state)})"
            for r in sorted(records, key=lambda r: (r.parent, r.name))
        ]
        assignments = (
            f"`spec` = {new('spec')}, `scheduled_at` = {new('scheduled_at')}, `locked_until` = NULL, "
            f"`locked_by` = NULL, `state` = {new('state')}"
        )
        return self._upsert.statement(self._t, _ALL_COLUMNS, rows, assignments)

    async def _force(self, conn: Any, *, records: Sequence[Record], chunk: list[int]) -> None:
        esc = conn.escape
        batch = [records[i] for i in chunk]
        hold = self._hold(esc, [(r.parent, r.name) for r in batch])
        await run(conn, "START TRANSACTION", self._overwrite(esc, batch), *hold, "COMMIT")

    async def _merge(
        self, conn: Any, *, records: Sequence[Record], chunk: list[int], now: datetime, mode: RegisterMode
    ) -> list[bool]:
        """CREATE / UPDATE: lock the existing rows, decide per record, then write and commit."""
        esc = conn.escape
        batch = [records[i] for i in chunk]
        existing = await self._lock_rows(conn, "`scheduled_at`, `locked_until`", [(r.parent, r.name) for r in batch])
        written: list[bool] = []
        inserts: list[Record] = []
        updates: list[tuple[Record, datetime]] = []
        overwrites: list[Record] = []
        for record in batch:
            row = existing.get((record.parent, record.name))
            if row is None:
                inserts.append(record)
                written.append(True)
                continue
            if mode is RegisterMode.CREATE:
                written.append(False)
                continue
            scheduled_at, locked_until = row
            stored = decode(record.parent, record.name, None, scheduled_at, locked_until, None)
            if stored.corrupt is not None:
                overwrites.append(record)  # as if it were missing
            elif stored.locked_until is not None and stored.locked_until > now:
                written.append(False)
                continue
            else:
                updates.append((record, min(stored.scheduled_at, record.scheduled_at)))
            written.append(True)
        statements = []
        if inserts:
            # A plain INSERT: if another instance inserted one of these keys meanwhile, the duplicate-key
            # error rolls everything back and the transaction is retried, so the flags stay exact.
            rows = [
                f"({esc(r.parent)}, {esc(r.name)}, {esc(r.spec)}, {time_literal(r.scheduled_at)}, {esc(r.state)})"
                for r in sorted(inserts, key=lambda r: (r.parent, r.name))
            ]
            statements.append(
                f"INSERT INTO {self._t} (`parent`, `name`, `spec`, `scheduled_at`, `state`) VALUES {', '.join(rows)}"
            )
        if updates:
            # The rows are locked and exist, so this upsert only ever takes its UPDATE branch.
            new = self._upsert.new
            rows = [
                f"({esc(r.parent)}, {esc(r.name)}, {esc(r.spec)}, {time_literal(at)})"
                for r, at in sorted(updates, key=lambda u: (u[0].parent, u[0].name))
            ]
            statements.append(
                self._upsert.statement(
                    self._t,
                    "`parent`, `name`, `spec`, `scheduled_at`",
                    rows,
                    f"`spec` = {new('spec')}, `scheduled_at` = {new('scheduled_at')}",
                )
            )
        if overwrites:
            statements.append(self._overwrite(esc, overwrites))
        if inserts:
            statements.extend(self._hold(esc, [(r.parent, r.name) for r in inserts]))
        await run(conn, *statements, "COMMIT")
        return written

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        if limit < 1:
            return []
        if len(token) > MAX_TOKEN_CHARS:
            raise ConfigurationError(f"lease token longer than {MAX_TOKEN_CHARS} characters")
        until = time_literal(lease_until)

        async def body(conn: Any) -> list[Record]:
            esc = conn.escape
            results = await run(conn, "START TRANSACTION", claim_query(self._table, esc, parent, now, limit))
            rows = results[1].rows
            if not rows:
                await run(conn, "COMMIT")
                return []
            names = ", ".join(esc(row[0]) for row in rows)
            await run(
                conn,
                f"UPDATE {self._t} SET `locked_until` = {until}, `locked_by` = {esc(token)} "
                f"WHERE `parent` = {esc(parent)} AND `name` IN ({names})",
                "COMMIT",
            )
            # A row whose scheduled_at is not a valid date is leased like the others and comes back corrupt,
            # for the runtime to park (a commit to PARKED_AT overwrites the bad value).
            return [
                decode(parent, name, spec, scheduled_at, lease_until, token, state)
                for name, spec, scheduled_at, state in rows
            ]

        return await self._transaction("claim", body)

    async def _finish(
        self, what: str, items: Sequence[tuple[str, str, str]], write: Callable[[Any, list[int]], list[str]]
    ) -> list[bool]:
        """Shared by commit and unlock: lock the rows, keep those whose token matches, write them, commit."""
        results = [False] * len(items)
        firsts = _first_occurrences([(parent, name) for parent, name, _ in items])
        for start in range(0, len(firsts), BATCH_ROWS):
            chunk = firsts[start : start + BATCH_ROWS]

            async def body(conn: Any, chunk: list[int] = chunk) -> list[int]:
                current = await self._lock_rows(conn, "`locked_by`", [items[i][:2] for i in chunk])
                matched = [i for i in chunk if (row := current.get(items[i][:2])) is not None and row[0] == items[i][2]]
                await run(conn, *(write(conn, matched) if matched else []), "COMMIT")
                return matched

            for index in await self._transaction(what, body):
                results[index] = True
        return results

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        def write(conn: Any, matched: list[int]) -> list[str]:
            esc = conn.escape
            statements = []
            moved = sorted(
                (completions[i] for i in matched if completions[i].next_at is not None),
                key=lambda c: (c.parent, c.name),
            )
            gone = [(completions[i].parent, completions[i].name) for i in matched if completions[i].next_at is None]
            new = self._upsert.new
            # The rows exist and are locked, so these upserts only ever take their UPDATE branch. A NULL
            # state keeps the stored one; completions that keep their lease go in a statement of their own.
            for release in (True, False):
                rows = [
                    f"({esc(c.parent)}, {esc(c.name)}, {time_literal(c.next_at)}, {esc(c.state)})"
                    for c in moved
                    if c.next_at is not None and c.release is release
                ]
                if not rows:
                    continue
                lease = ", `locked_until` = NULL, `locked_by` = NULL" if release else ""
                statements.append(
                    self._upsert.statement(
                        self._t,
                        "`parent`, `name`, `scheduled_at`, `state`",
                        rows,
                        f"`scheduled_at` = {new('scheduled_at')}, `state` = COALESCE({new('state')}, `state`){lease}",
                    )
                )
            statements.extend(f"DELETE FROM {self._t} WHERE {condition}" for condition in key_filters(esc, gone))
            return statements

        return await self._finish("commit", [(c.parent, c.name, c.token) for c in completions], write)

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        def write(conn: Any, matched: list[int]) -> list[str]:
            keys = [(leases[i].parent, leases[i].name) for i in matched]
            return [
                f"UPDATE {self._t} SET `locked_until` = NULL, `locked_by` = NULL WHERE {condition}"
                for condition in key_filters(conn.escape, keys)
            ]

        return await self._finish("unlock", [(lease.parent, lease.name, lease.token) for lease in leases], write)

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        async def body(conn: Any) -> bool:
            esc = conn.escape
            # The connection reports matched rows (CLIENT_FOUND_ROWS), so an unchanged expiry still counts.
            (result,) = await run(
                conn,
                f"UPDATE {self._t} SET `locked_until` = {time_literal(lease_until)} "
                f"WHERE `parent` = {esc(lease.parent)} AND `name` = {esc(lease.name)} "
                f"AND `locked_by` = {esc(lease.token)}",
            )
            return result.rowcount == 1

        return await self._transaction("extend", body)

    async def delete(self, parent: str, name: str) -> bool:
        async def body(conn: Any) -> bool:
            esc = conn.escape
            (result,) = await run(
                conn, f"DELETE FROM {self._t} WHERE `parent` = {esc(parent)} AND `name` = {esc(name)}"
            )
            return result.rowcount == 1

        return await self._transaction("delete", body)

    async def get(self, parent: str, name: str) -> Record | None:
        async def body(conn: Any) -> Record | None:
            esc = conn.escape
            (result,) = await run(
                conn,
                f"SELECT {_SELECT_COLUMNS} FROM {self._t} WHERE `parent` = {esc(parent)} AND `name` = {esc(name)}",
            )
            return decode(parent, *result.rows[0]) if result.rows else None

        return await self._transaction("get", body)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        if limit < 1:
            raise ConfigurationError(f"invalid page limit {limit!r}: must be >= 1")

        async def body(conn: Any) -> list[Record]:
            (result,) = await run(conn, list_query(self._table, conn.escape, parent, continuation, limit + 1))
            return [decode(parent, *row) for row in result.rows]

        records = await self._transaction("list", body)
        if len(records) > limit:
            return records[:limit], records[limit - 1].name
        return records, None

    # -- the control plane ---------------------------------------------------------------------

    def _pause_statements(self, esc: Escape, rule: PauseRule) -> list[str]:
        """Pause's transaction without its COMMIT: write the guard and the rule, lock the matching rows (waiting for
        any being inserted, see :meth:`_hold`) and count them, mark them held."""
        kind = PREFIX_RULE if rule.prefix else NAME_RULE
        where = f"`parent` = {esc(rule.parent)} AND " + rule_filter(
            esc, rule.match, prefix=rule.prefix, ordered=self._ordered
        )
        return [
            "START TRANSACTION",
            self._guard(esc, rule.parent, f"({esc(rule.parent)}, {kind}, {esc(rule.match)}, {esc(rule.info)})"),
            f"SELECT COUNT(*) FROM {self._t} WHERE {where} FOR UPDATE",
            f"UPDATE {self._t} SET `paused` = 1 WHERE {where} AND `paused` = 0",
        ]

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        """One transaction in one round trip (see :meth:`_pause_statements`); returns the count it read."""
        _check_key("pause parent", rule.parent)
        _check_key("pause match", rule.match)

        async def body(conn: Any) -> int:
            results = await run(conn, *self._pause_statements(conn.escape, rule), "COMMIT")
            return int(results[2].rows[0][0])

        return await self._transaction("pause", body)

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        """One transaction, one round trip: lock the guard, delete the rule, and set ``paused`` of the held rows
        it matched from the rules that remain."""
        if len(parent) > MAX_KEY_CHARS or len(match) > MAX_KEY_CHARS:
            return False  # no such rule can have been stored
        kind = PREFIX_RULE if prefix else NAME_RULE

        async def body(conn: Any) -> bool:
            esc = conn.escape
            where = f"`parent` = {esc(parent)} AND " + rule_filter(esc, match, prefix=prefix, ordered=self._ordered)
            results = await run(
                conn,
                "START TRANSACTION",
                self._guard(esc, parent),
                f"DELETE FROM {self._r} WHERE `parent` = {esc(parent)} AND `kind` = {kind} AND `match` = {esc(match)}",
                f"UPDATE {self._t} SET `paused` = {held_condition(self._t, self._r, esc(parent))} "
                f"WHERE {where} AND `paused` = 1",
                "COMMIT",
            )
            return results[2].rowcount == 1

        return await self._transaction("resume", body)

    async def pauses(self, parent: str) -> list[PauseRule]:
        async def body(conn: Any) -> list[PauseRule]:
            (result,) = await run(
                conn,
                f"SELECT `kind`, `match`, `info` FROM {self._r} WHERE `parent` = {conn.escape(parent)} "
                f"AND `kind` IN ({NAME_RULE}, {PREFIX_RULE})",
            )
            return [PauseRule(parent, match, kind == PREFIX_RULE, info) for kind, match, info in result.rows]

        return await self._transaction("pauses", body)

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        """One compare-and-set ``UPDATE`` on the primary key."""
        at = time_literal(now)

        async def body(conn: Any) -> bool:
            esc = conn.escape
            (result,) = await run(
                conn,
                f"UPDATE {self._t} SET `scheduled_at` = {time_literal(scheduled_at)}, "
                f"`state` = COALESCE({esc(state)}, `state`) "
                f"WHERE `parent` = {esc(parent)} AND `name` = {esc(name)} "
                f"AND `scheduled_at` = {time_literal(expected)} AND (`locked_until` IS NULL OR `locked_until` <= {at})",
            )
            return result.rowcount == 1

        return await self._transaction("reschedule", body)

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        """Keyset pages of ``SELECT DISTINCT parent`` (a loose scan of the primary key)."""
        if limit < 1:
            raise ConfigurationError(f"invalid page limit {limit!r}: must be >= 1")

        async def body(conn: Any) -> list[str]:
            after = "" if continuation is None else f" WHERE `parent` > {conn.escape(continuation)}"
            (result,) = await run(
                conn, f"SELECT DISTINCT `parent` FROM {self._t}{after} ORDER BY `parent` LIMIT {int(limit) + 1}"
            )
            return [str(row[0]) for row in result.rows]

        names = await self._transaction("parents", body)
        if len(names) > limit:
            return names[:limit], names[limit - 1]
        return names, None

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        async def body(conn: Any) -> None:
            esc = conn.escape
            await run(
                conn,
                f"UPDATE {self._t} SET `spec` = {esc(raw)} WHERE `parent` = {esc(parent)} AND `name` = {esc(name)}",
            )

        await self._transaction("write_raw_spec", body)

    async def corrupt(self, parent: str, name: str) -> None:
        """Store a zero date as ``scheduled_at``, as a session without strict mode (or a hand edit) can."""
        conn = await self._connect()
        try:
            with map_exceptions(ERRORS, f"mysql corrupt ({self._where})"):
                esc = conn.escape
                await run(
                    conn,
                    "SET SESSION sql_mode = ''",
                    f"UPDATE {self._t} SET `scheduled_at` = '0000-00-00 00:00:00' "
                    f"WHERE `parent` = {esc(parent)} AND `name` = {esc(name)}",
                )
        finally:
            conn.close()

    async def kill_connections(self) -> int:
        """``KILL`` this repository's pooled connections (by their server ids) from a separate connection."""
        pool = self._pool
        # aiomysql has no public list of a pool's connections.
        ids = sorted({conn.thread_id() for conn in [*pool._free, *pool._used] if not conn.closed})
        if not ids:
            return 0
        killed = 0
        conn = await self._connect()
        try:
            with map_exceptions(ERRORS, f"mysql kill_connections ({self._where})"):
                async with conn.cursor() as cursor:
                    for thread_id in ids:
                        try:
                            await cursor.execute(f"KILL {int(thread_id)}")
                            killed += 1
                        except aiomysql.MySQLError as exc:
                            if error_code(exc) != UNKNOWN_THREAD:  # one that ended meanwhile is not an error
                                raise
        finally:
            conn.close()
        return killed
