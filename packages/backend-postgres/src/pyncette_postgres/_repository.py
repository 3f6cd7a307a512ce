"""The PostgreSQL repository: every batch operation is one prepared statement over ``unnest()`` arrays.

Pause rules live in ``<table>_pauses``; a record's ``paused`` flag caches whether one of them matches it
(see :mod:`pyncette_postgres._schema`). Pause and resume update the flags of the matched records in one
statement, inside a short transaction holding the rules table's ``ACCESS EXCLUSIVE`` lock: every
registration reads the rules table, so it either finishes before the rule changes (and the pause or resume
statement then sees its record) or starts after (and sees the new rules).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import anyio
import asyncpg
import asyncpg.exceptions

from pyncette.abc import PARKED_AT, Completion, Lease, PauseRule, Record, RegisterMode, Repository, map_exceptions
from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Settings

from ._config import connect_arguments, describe_server
from ._schema import CLAIMABLE_AT, pauses_table_name, quote

#: Driver exceptions and what they become, the first match winning. A data error (SQLSTATE class 22:
#: a value out of range, a string too long for a hand-made column, a NUL in a text) or an exceeded
#: limit (class 54: a key too large for the index) fails the same way on every retry.
DRIVER_ERRORS: Mapping[type[BaseException], type[Exception]] = {
    asyncpg.exceptions.DataError: ConfigurationError,
    asyncpg.exceptions.ProgramLimitExceededError: ConfigurationError,
    asyncpg.PostgresError: BackendError,
    asyncpg.InterfaceError: BackendError,
    asyncpg.exceptions.InternalClientError: BackendError,
    OSError: BackendError,
    asyncio.TimeoutError: BackendError,
}

#: Errors after which the pool's other idle connections are suspect too (a
#: server restart or pg_terminate_backend usually takes them all down).
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    # A connection whose server went away while it sat idle can fail with
    # "cannot switch to state ...; another operation is in progress".
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)

# --- times -----------------------------------------------------------------------------------------
#
# Times travel as PostgreSQL's own binary form, microseconds since 2000-01-01 UTC (asyncpg's "tuple"
# codec), and are turned into datetimes here, one row at a time: a stored time Python cannot hold
# ('infinity', a year after 9999 or before 1, all valid in a timestamptz) then marks its record as
# corrupt instead of failing the whole fetch, as the driver's own decoder would.

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_INFINITY = 2**63 - 1
_MINUS_INFINITY = -(2**63)
#: SQL literals: the earliest and latest times Python's datetime can hold.
_READABLE_FROM, _READABLE_TO = "'0001-01-01 00:00:00+00'::timestamptz", "'9999-12-31 23:59:59.999999+00'::timestamptz"


def _unreadable(column: str) -> str:
    """SQL: whether a stored time is outside what Python can hold (NULL for a NULL time)."""
    return f"({column} < {_READABLE_FROM} OR {column} > {_READABLE_TO})"


#: SQL: whether the stored record (alias ``t``) has a time Python cannot hold.
_CORRUPT = f"({_unreadable('t.scheduled_at')} OR {_unreadable('t.locked_until')} IS TRUE)"


def _encode_time(value: datetime) -> tuple[int]:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _PG_EPOCH
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,)


def _decode_time(value: tuple[int]) -> int:
    return value[0]


def _to_datetime(micros: int) -> datetime:
    if micros == _INFINITY:
        raise ValueError("'infinity'")
    if micros == _MINUS_INFINITY:
        raise ValueError("'-infinity'")
    try:
        return _PG_EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"{micros} microseconds after 2000-01-01 is outside years 1-9999") from None


def _record(parent: str, row: Any) -> Record:
    """Decode a row; one Python cannot hold comes back with ``corrupt`` set (see the contract)."""
    problems = []
    until = None
    if row["locked_until"] is not None:
        try:
            until = _to_datetime(row["locked_until"])
        except ValueError as exc:
            problems.append(f"locked_until {exc}")
    try:
        scheduled_at = _to_datetime(row["scheduled_at"])
    except ValueError as exc:
        problems.append(f"scheduled_at {exc}")
        scheduled_at = PARKED_AT
    return Record(
        parent=parent,
        name=row["name"],
        spec=row["spec"],
        scheduled_at=scheduled_at,
        locked_until=until,
        locked_by=row["locked_by"],
        corrupt=f"unreadable stored time: {', '.join(problems)}" if problems else None,
        state=row["state"],
    )


# --- connections -----------------------------------------------------------------------------------


class Connections:
    """The pool's open connections: prepared as they open, and known so that only they are ever cut."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.live: set[asyncpg.Connection] = set()

    async def opened(self, connection: asyncpg.Connection) -> None:
        """Pool ``init`` hook, run for every new connection."""
        await connection.set_type_codec(
            "timestamptz", schema="pg_catalog", encoder=_encode_time, decoder=_decode_time, format="tuple"
        )
        self.live.add(connection)
        # The listener may be handed the pool's proxy instead of the connection: discard this one.
        connection.add_termination_listener(lambda _: self.live.discard(connection))

    def server_pids(self) -> list[int]:
        """The server-side PIDs of the connections still open."""
        return sorted({c.get_server_pid() for c in list(self.live) if not c.is_closed()})


# --- wake-ups --------------------------------------------------------------------------------------

#: Seconds without a hint after which the listening connection is checked with a ``SELECT 1``: a connection
#: a network failure cut without a word is noticed within this plus ``postgres_command_timeout``.
KEEPALIVE = 30.0
#: Hints waiting for the reader at most; more are dropped (hints are best effort: polling finds the work).
MAX_PENDING = 1000

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_hint(payload: str) -> datetime | None:
    """The due time a hint's payload (epoch seconds, as text) names; ``None`` when it names none Python can hold."""
    try:
        return _UNIX_EPOCH + timedelta(microseconds=int(Decimal(payload) * 1_000_000))
    except (ArithmeticError, ValueError):  # not a number, infinite, or outside years 1-9999 (OverflowError)
        return None


class _Hints:
    """The hints arriving on one listening connection, as an async iterator of due times."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self._queue: asyncio.Queue[datetime | None] = asyncio.Queue()
        self._lost = False

    def received(self, connection: object, pid: int, channel: str, payload: object) -> None:
        """asyncpg's notification callback."""
        due = parse_hint(str(payload))
        if due is not None and self._queue.qsize() < MAX_PENDING:
            self._queue.put_nowait(due)

    def terminated(self, connection: object) -> None:
        """asyncpg's termination callback: the connection closed (or was cut)."""
        self._lost = True
        self._queue.put_nowait(None)

    def __aiter__(self) -> _Hints:
        return self

    async def __anext__(self) -> datetime:
        while True:
            if self._lost or self._connection.is_closed():
                raise BackendError("postgres wakeups failed: the listening connection was lost")
            try:
                due = await asyncio.wait_for(self._queue.get(), KEEPALIVE)
            except TimeoutError:
                with map_exceptions(DRIVER_ERRORS, "postgres wakeups"):
                    await self._connection.execute("SELECT 1")
                continue
            if due is not None:
                return due


async def _connect(settings: Settings, what: str) -> asyncpg.Connection:
    """A connection outside the pool, with the pool's arguments; a failure is reported without the driver's
    exception (its text or arguments could hold the URL), redacted."""
    try:
        return await asyncpg.connect(**connect_arguments(settings))
    except Exception as exc:
        server = settings.redact(describe_server(settings["postgres_url"]))
        detail = settings.redact(f"{type(exc).__name__}: {exc}")
        raise BackendError(f"postgres {what}: cannot connect to PostgreSQL at {server}: {detail}") from None


async def _close_connection(connection: asyncpg.Connection, within: float) -> None:
    """Close gracefully, even while being cancelled, for at most ``within`` seconds; then terminate."""
    with anyio.move_on_after(within, shield=True):
        with contextlib.suppress(Exception):  # closing is best effort: the connection is gone either way
            await connection.close()
    if not connection.is_closed():
        connection.terminate()


# --- statements ------------------------------------------------------------------------------------


def _first_occurrences(keys: Iterable[tuple[str, ...]]) -> tuple[list[int], list[int]]:
    """Split positions into first occurrences of each key (sorted by key, for a stable lock order) and repeats."""
    first: dict[tuple[str, ...], int] = {}
    repeats: list[int] = []
    for position, key in enumerate(keys):
        if key in first:
            repeats.append(position)
        else:
            first[key] = position
    return [first[key] for key in sorted(first)], repeats


def _like_prefix(prefix: str) -> str:
    """The LIKE pattern of the names starting with ``prefix``: its backslashes, ``%`` and ``_`` escaped with a
    backslash (LIKE's default escape character), then ``%``. Sent as a bound value, never as SQL text; it
    only lets the planner derive the primary-key range of the prefix (PostgreSQL 15 does so from
    ``starts_with`` too, earlier versions do not)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _matching(prefix: bool, pattern: str) -> str:
    """SQL: whether the record's ``name`` matches the rule ``$2`` (``pattern``: the parameter of its LIKE pattern)."""
    return f"name LIKE {pattern} AND starts_with(name, $2)" if prefix else "name = $2"


def _notify(channel: str, due_at: str) -> str:
    """SQL: send the wake-up hint ``due_at`` (a timestamptz expression) on the channel parameter ``channel``.

    The payload is the time as epoch seconds in text: never an error, even for a time Python cannot hold.
    """
    return f"pg_notify({channel}::text, extract(epoch FROM {due_at})::text)"


#: SQL: a condition that is always true and makes the statement run its ``hint`` part (a part of a WITH
#: that only reads, as ``hint`` does, runs only when something refers to it).
_SENT = "(SELECT count(*) FROM hint) >= 0"


def _register(source: str, table: str, upsert: str, *, compare: bool) -> str:
    """SQL: a registration (``upsert`` reading the batch ``i``) that sends one hint on channel ``$6``.

    The hint carries the earliest claimable time of the written records that are not held and either new
    or, with ``compare``, claimable sooner than before (``prior`` reads them as they were: every part of
    the statement shares one snapshot); none is sent when no record is such. Without ``compare`` (records
    only ever inserted) every written record is new.
    """
    if not compare:
        return f"""
            WITH i AS (SELECT * FROM {source}), written AS ({upsert}), hint AS (
                SELECT {_notify("$6", "min(due_at)")} FROM written WHERE NOT paused HAVING count(*) > 0
            )
            SELECT parent, name FROM written WHERE {_SENT}"""
    return f"""
        WITH i AS (SELECT * FROM {source}), prior AS (
            SELECT t.parent, t.name, GREATEST(t.scheduled_at, t.locked_until) AS due_at FROM {table} AS t
            JOIN i ON t.parent = i.parent AND t.name = i.name
        ), written AS ({upsert}), hint AS (
            SELECT {_notify("$6", "min(w.due_at)")}
            FROM written AS w LEFT JOIN prior AS p ON p.parent = w.parent AND p.name = w.name
            WHERE NOT w.paused AND (p.due_at IS NULL OR w.due_at < p.due_at)
            HAVING count(*) > 0
        )
        SELECT parent, name FROM written WHERE {_SENT}"""


class _Statements:
    """The SQL of one table, built once from its validated, quoted name."""

    def __init__(self, table: str) -> None:
        t = quote(table)
        r = quote(pauses_table_name(table))
        columns = "name, spec, scheduled_at, locked_until, locked_by, state"
        source = (
            "unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])"
            " AS i(parent, name, spec, scheduled_at, state)"
        )
        # A new record is held when a rule of its parent matches it. The uncorrelated EXISTS runs once per
        # statement (an InitPlan), so while no rule exists anywhere no record costs a lookup in the rules.
        # An existing record keeps its flag: pause and resume maintain it.
        held = (
            f"CASE WHEN EXISTS (SELECT 1 FROM {r}) THEN EXISTS (SELECT 1 FROM {r} AS r"
            " WHERE r.parent = i.parent AND starts_with(i.name, r.match) AND (r.prefix OR r.match = i.name))"
            " ELSE false END"
        )
        insert = (
            f"INSERT INTO {t} AS t (parent, name, spec, scheduled_at, state, paused) SELECT i.*, {held} FROM i"
            " ON CONFLICT (parent, name)"
        )
        returning = " RETURNING t.parent, t.name, GREATEST(t.scheduled_at, t.locked_until) AS due_at, t.paused"
        upserts = {
            RegisterMode.CREATE: f"{insert} DO NOTHING{returning}",
            # A stored record with a time Python cannot hold is overwritten as if it were missing.
            RegisterMode.UPDATE: (
                f"{insert} DO UPDATE SET spec = EXCLUDED.spec,"
                f" scheduled_at = CASE WHEN {_CORRUPT} THEN EXCLUDED.scheduled_at"
                " ELSE LEAST(t.scheduled_at, EXCLUDED.scheduled_at) END,"
                f" locked_until = CASE WHEN {_CORRUPT} THEN NULL ELSE t.locked_until END,"
                f" locked_by = CASE WHEN {_CORRUPT} THEN NULL ELSE t.locked_by END,"
                f" state = CASE WHEN {_CORRUPT} THEN EXCLUDED.state ELSE t.state END"
                f" WHERE t.locked_until IS NULL OR t.locked_until <= $7 OR {_CORRUPT}{returning}"
            ),
            RegisterMode.FORCE: (
                f"{insert} DO UPDATE SET spec = EXCLUDED.spec, scheduled_at = EXCLUDED.scheduled_at,"
                f" locked_until = NULL, locked_by = NULL, state = EXCLUDED.state{returning}"
            ),
        }
        self.register = {
            mode: _register(source, t, upsert, compare=mode is not RegisterMode.CREATE)
            for mode, upsert in upserts.items()
        }
        # The inner SELECT walks the (parent, claimable_at) index from the oldest
        # due entry and stops after $3 rows it could lock, so its cost depends on
        # the due rows only; SKIP LOCKED lets concurrent claimers pass each other.
        # The index leaves held records out (WHERE NOT paused): a claim never reads them.
        # The UPDATE finds the locked rows by their physical address (a TID scan):
        # joining on the key let the planner pick a scan of the whole table.
        self.claim = f"""
            WITH due AS (
                SELECT ctid AS row_id, {CLAIMABLE_AT} AS due_at FROM {t}
                WHERE parent = $1 AND {CLAIMABLE_AT} <= $2 AND NOT paused
                ORDER BY {CLAIMABLE_AT}
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE {t} AS t SET locked_until = $4, locked_by = $5
                FROM due WHERE t.ctid = due.row_id
                RETURNING t.name, t.spec, t.scheduled_at, t.locked_until, t.locked_by, t.state, due.due_at
            )
            SELECT {columns} FROM claimed ORDER BY due_at, name"""
        self.commit = f"""
            WITH i AS (
                SELECT * FROM unnest(
                    $1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bool[], $7::int4[]
                ) AS i(parent, name, token, next_at, state, release, pos)
            ), deleted AS (
                DELETE FROM {t} AS t USING i
                WHERE i.next_at IS NULL AND t.parent = i.parent AND t.name = i.name AND t.locked_by = i.token
                RETURNING i.pos
            ), updated AS (
                UPDATE {t} AS t SET scheduled_at = i.next_at, state = COALESCE(i.state, t.state),
                    locked_until = CASE WHEN i.release THEN NULL ELSE t.locked_until END,
                    locked_by = CASE WHEN i.release THEN NULL ELSE t.locked_by END
                FROM i
                WHERE i.next_at IS NOT NULL AND t.parent = i.parent AND t.name = i.name AND t.locked_by = i.token
                RETURNING i.pos
            )
            SELECT pos FROM deleted UNION ALL SELECT pos FROM updated"""
        self.unlock = f"""
            UPDATE {t} AS t SET locked_until = NULL, locked_by = NULL
            FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[]) AS i(parent, name, token, pos)
            WHERE t.parent = i.parent AND t.name = i.name AND t.locked_by = i.token
            RETURNING i.pos"""
        self.extend = (
            f"UPDATE {t} SET locked_until = $4 WHERE parent = $1 AND name = $2 AND locked_by = $3 RETURNING true"
        )
        self.delete = f"DELETE FROM {t} WHERE parent = $1 AND name = $2 RETURNING true"
        self.delete_many = (
            f"DELETE FROM {t} AS t USING unnest($1::text[], $2::text[]) AS k(parent, name)"
            " WHERE t.parent = k.parent AND t.name = k.name RETURNING t.parent, t.name"
        )
        self.get = f"SELECT {columns} FROM {t} WHERE parent = $1 AND name = $2"
        self.first_page = f"SELECT {columns} FROM {t} WHERE parent = $1 ORDER BY name LIMIT $2"
        self.next_page = f"SELECT {columns} FROM {t} WHERE parent = $1 AND name > $3 ORDER BY name LIMIT $2"
        self.write_raw_spec = f"UPDATE {t} SET spec = $3 WHERE parent = $1 AND name = $2"
        # A hand edit PostgreSQL accepts and Python cannot read back; the record stays due.
        self.corrupt = f"UPDATE {t} SET scheduled_at = '-infinity' WHERE parent = $1 AND name = $2"

        # -- the control plane --
        # Run after lock_rules, in its transaction, with custom plans: the planner then turns the prefix's
        # LIKE pattern (see _like_prefix) into a range of the primary key (PostgreSQL's own bounds, right for
        # any encoding), and name = 'literal' into one key lookup. starts_with is the exact test.
        self.lock_rules = f"SET LOCAL plan_cache_mode = force_custom_plan; LOCK TABLE {r} IN ACCESS EXCLUSIVE MODE"
        self.pause: dict[bool, str] = {}
        self.resume: dict[bool, str] = {}
        for prefix in (False, True):
            flag = "true" if prefix else "false"
            # Stores the rule, flags the matched records not yet held and counts all matched records (the
            # count reads the snapshot from before the update, which the UPDATE does not change).
            self.pause[prefix] = f"""
                WITH rule AS (
                    INSERT INTO {r} (parent, match, prefix, info) VALUES ($1, $2, {flag}, $3)
                    ON CONFLICT (parent, match, prefix) DO UPDATE SET info = EXCLUDED.info
                ), held AS (
                    UPDATE {t} SET paused = true WHERE parent = $1 AND {_matching(prefix, "$4")} AND NOT paused
                )
                SELECT count(*) FROM {t} WHERE parent = $1 AND {_matching(prefix, "$4")}"""
            # Deletes the rule and releases the held records it matched that no other rule matches (the
            # rules the statement reads still include the deleted one: it is excluded by its key).
            self.resume[prefix] = f"""
                WITH rule AS (
                    DELETE FROM {r} WHERE parent = $1 AND match = $2 AND prefix = {flag} RETURNING 1
                ), released AS (
                    UPDATE {t} AS t SET paused = false
                    WHERE t.parent = $1 AND {_matching(prefix, "$3")} AND t.paused AND EXISTS (SELECT 1 FROM rule)
                        AND NOT EXISTS (
                            SELECT 1 FROM {r} AS r
                            WHERE r.parent = $1 AND NOT (r.match = $2 AND r.prefix = {flag})
                                AND starts_with(t.name, r.match) AND (r.prefix OR r.match = t.name)
                        )
                    RETURNING {CLAIMABLE_AT} AS due_at
                ), hint AS (
                    SELECT {_notify("$4" if prefix else "$3", "min(due_at)")} FROM released HAVING count(*) > 0
                )
                SELECT count(*) FROM rule WHERE {_SENT}"""
        self.pauses = f"SELECT match, prefix, info FROM {r} WHERE parent = $1 ORDER BY match, prefix"
        self.reschedule = f"""
            WITH written AS (
                UPDATE {t} SET scheduled_at = $3, state = COALESCE($4, state)
                WHERE parent = $1 AND name = $2 AND scheduled_at = $6 AND (locked_until IS NULL OR locked_until <= $5)
                RETURNING {CLAIMABLE_AT} AS due_at, paused
            ), hint AS (
                SELECT {_notify("$7", "min(due_at)")} FROM written WHERE NOT paused HAVING count(*) > 0
            )
            SELECT true FROM written WHERE {_SENT}"""
        # A loose index scan of the primary key: one descent per parent, however many records each holds.
        walk = f"""
            UNION ALL
                SELECT (SELECT n.parent FROM {t} AS n WHERE n.parent > p.parent ORDER BY n.parent LIMIT 1)
                FROM p WHERE p.parent IS NOT NULL
            )
            SELECT parent FROM p WHERE parent IS NOT NULL LIMIT $1"""
        self.first_parents = f"WITH RECURSIVE p(parent) AS ((SELECT parent FROM {t} ORDER BY parent LIMIT 1){walk}"
        self.next_parents = (
            f"WITH RECURSIVE p(parent) AS ((SELECT parent FROM {t} WHERE parent > $2 ORDER BY parent LIMIT 1){walk}"
        )


class PostgresRepository(Repository):
    """Task records in one PostgreSQL table, reached through an asyncpg connection pool."""

    def __init__(self, pool: Any, table_name: str, connections: Connections, channel: str) -> None:
        self._pool = pool
        self._connections = connections
        self.table_name = table_name
        #: The wake-up channel of the table (see :func:`~pyncette_postgres._schema.channel_name`).
        self.channel = channel
        self._sql = _Statements(table_name)

    async def _call(self, what: str, method: str, sql: str, *args: Any) -> Any:
        """Run one pool method (``fetch``, ``fetchrow``, ...), translating driver errors."""
        with map_exceptions(DRIVER_ERRORS, f"postgres {what}"):
            try:
                return await getattr(self._pool, method)(sql, *args)
            except _CONNECTION_LOST:
                # Make the pool reconnect its idle connections on their next use,
                # so one failed call is enough to recover from a mass disconnect.
                await self._pool.expire_connections()
                raise

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        results = [False] * len(records)
        pending = list(range(len(records)))
        # ON CONFLICT cannot touch one row twice in a statement: a key repeated in
        # the batch goes into a later round, which sees the earlier write.
        while pending:
            batch, repeats = _first_occurrences((records[i].parent, records[i].name) for i in pending)
            chosen = [records[pending[i]] for i in batch]
            args: list[Any] = [
                [r.parent for r in chosen],
                [r.name for r in chosen],
                [r.spec for r in chosen],
                [r.scheduled_at for r in chosen],
                [r.state for r in chosen],
                self.channel,
            ]
            if mode is RegisterMode.UPDATE:
                args.append(now)
            rows = await self._call("register", "fetch", self._sql.register[mode], *args)
            written = {(row["parent"], row["name"]) for row in rows}
            for r, i in zip(chosen, batch, strict=True):
                results[pending[i]] = (r.parent, r.name) in written
            pending = [pending[i] for i in repeats]
        return results

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        if limit <= 0:
            return []
        rows = await self._call("claim", "fetch", self._sql.claim, parent, now, limit, lease_until, token)
        return [_record(parent, row) for row in rows]

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        if not completions:
            return []
        # A repeated (record, token) can match once: the first one clears the lease.
        order, _ = _first_occurrences((c.parent, c.name, c.token) for c in completions)
        chosen = [completions[i] for i in order]
        rows = await self._call(
            "commit",
            "fetch",
            self._sql.commit,
            [c.parent for c in chosen],
            [c.name for c in chosen],
            [c.token for c in chosen],
            [c.next_at for c in chosen],
            [c.state for c in chosen],
            [c.release for c in chosen],
            order,
        )
        done = {row["pos"] for row in rows}
        return [i in done for i in range(len(completions))]

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        if not leases:
            return []
        order, _ = _first_occurrences((x.parent, x.name, x.token) for x in leases)
        chosen = [leases[i] for i in order]
        rows = await self._call(
            "unlock",
            "fetch",
            self._sql.unlock,
            [x.parent for x in chosen],
            [x.name for x in chosen],
            [x.token for x in chosen],
            order,
        )
        done = {row["pos"] for row in rows}
        return [i in done for i in range(len(leases))]

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        args = (lease.parent, lease.name, lease.token, lease_until)
        return await self._call("extend", "fetchval", self._sql.extend, *args) is not None

    async def delete(self, parent: str, name: str) -> bool:
        return await self._call("delete", "fetchval", self._sql.delete, parent, name) is not None

    async def delete_many(self, keys: Sequence[tuple[str, str]]) -> list[bool]:
        if not keys:
            return []
        rows = await self._call(
            "delete", "fetch", self._sql.delete_many, [parent for parent, _ in keys], [name for _, name in keys]
        )
        deleted = {(row["parent"], row["name"]) for row in rows}
        flags = []
        for key in keys:
            flags.append(key in deleted)
            deleted.discard(key)  # a key given twice was deleted once
        return flags

    async def get(self, parent: str, name: str) -> Record | None:
        row = await self._call("get", "fetchrow", self._sql.get, parent, name)
        return None if row is None else _record(parent, row)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        if continuation is None:
            rows = await self._call("list", "fetch", self._sql.first_page, parent, limit + 1)
        else:
            rows = await self._call("list", "fetch", self._sql.next_page, parent, limit + 1, continuation)
        page = [_record(parent, row) for row in rows[:limit]]
        return page, (page[-1].name if len(rows) > limit else None)

    async def _under_rules_lock(self, what: str, sql: str, *args: Any) -> Any:
        """Run ``sql`` (``fetchval``) in a transaction holding the rules table's lock: four round trips
        (``BEGIN``, ``LOCK``, the statement, ``COMMIT``), however many records it changes."""
        with map_exceptions(DRIVER_ERRORS, f"postgres {what}"):
            try:
                async with self._pool.acquire() as connection, connection.transaction():
                    await connection.execute(self._sql.lock_rules)
                    return await connection.fetchval(sql, *args)
            except _CONNECTION_LOST:
                await self._pool.expire_connections()
                raise

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        args = [rule.parent, rule.match, rule.info] + ([_like_prefix(rule.match)] if rule.prefix else [])
        return int(await self._under_rules_lock("pause", self._sql.pause[rule.prefix], *args))

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        args = [parent, match] + ([_like_prefix(match)] if prefix else []) + [self.channel]
        return bool(await self._under_rules_lock("resume", self._sql.resume[prefix], *args))

    async def pauses(self, parent: str) -> list[PauseRule]:
        rows = await self._call("pauses", "fetch", self._sql.pauses, parent)
        return [PauseRule(parent, row["match"], row["prefix"], row["info"]) for row in rows]

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        args = (parent, name, scheduled_at, state, now, expected, self.channel)
        return await self._call("reschedule", "fetchval", self._sql.reschedule, *args) is not None

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        if continuation is None:
            rows = await self._call("parents", "fetch", self._sql.first_parents, limit + 1)
        else:
            rows = await self._call("parents", "fetch", self._sql.next_parents, limit + 1, continuation)
        page = [row["parent"] for row in rows[:limit]]
        return page, (page[-1] if len(rows) > limit else None)

    def wakeups(self) -> AbstractAsyncContextManager[AsyncIterator[datetime]]:
        """Hints sent by ``register``, ``reschedule`` and ``resume`` of any process on this table, received
        on a dedicated connection (not from the pool) that LISTENs on :attr:`channel`.

        Iteration raises :class:`~pyncette.errors.BackendError` when that connection is lost (noticed at
        once when the server closes it, within :data:`KEEPALIVE` plus the command timeout otherwise).
        """
        return self._listen()

    @contextlib.asynccontextmanager
    async def _listen(self) -> AsyncIterator[AsyncIterator[datetime]]:
        settings = self._connections.settings
        connection = await _connect(settings, "wakeups")
        # Known to kill_connections as the pool's are (and, like them, forgotten once gone).
        self._connections.live.add(connection)
        try:
            hints = _Hints(connection)
            connection.add_termination_listener(hints.terminated)
            with map_exceptions(DRIVER_ERRORS, "postgres wakeups"):
                await connection.add_listener(self.channel, hints.received)
            yield hints
        finally:
            self._connections.live.discard(connection)
            await _close_connection(connection, settings["postgres_connect_timeout"])

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        await self._call("write_raw_spec", "execute", self._sql.write_raw_spec, parent, name, raw)

    async def corrupt(self, parent: str, name: str) -> None:
        await self._call("corrupt", "execute", self._sql.corrupt, parent, name)

    async def kill_connections(self) -> int:
        """Terminate this repository's own server connections (by their backend PIDs), from a separate one."""
        pids = self._connections.server_pids()
        if not pids:
            return 0
        settings = self._connections.settings
        with map_exceptions(DRIVER_ERRORS, "postgres kill_connections"):
            killer = await asyncpg.connect(**connect_arguments(settings))
            try:
                # From PostgreSQL 14 on, wait (up to 5 s) until each one is gone, so the cut is complete on return.
                wait = ", 5000" if killer.get_server_version().major >= 14 else ""
                killed: int = await killer.fetchval(
                    f"SELECT count(*) FROM unnest($1::int4[]) AS pid WHERE pg_terminate_backend(pid{wait})", pids
                )
            finally:
                await killer.close()
        return killed
