"""Query plans on a large table: due-work lookup, batch writes and pauses must use indexes, never scan the table.

One module-scoped table of 1,000,000 records (10 parents x 100,000, loaded
with ``generate_series``) serves every test. Run this file directly to print
the plans quoted in the README::

    python packages/backend-postgres/tests/test_plans.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from pyncette.abc import PauseRule
from pyncette_postgres import PostgresRepository, backend
from pyncette_postgres._schema import ddl, index_name, pauses_table_name, quote

pytestmark = pytest.mark.anyio

ROWS = 1_000_000
PARENTS = 10
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
#: Record i (named task-000000i) belongs to parent-(i % 10) and is due at T0 + i
#: seconds, so at NOW 1,000 records per parent are due; every 7th of those is
#: leased until far in the future.
NOW = T0 + timedelta(seconds=PARENTS * 1000)

LOAD = """
INSERT INTO {table} (parent, name, spec, scheduled_at, locked_until, locked_by)
SELECT 'parent-' || (i % {parents}),
       'task-' || lpad(i::text, 7, '0'),
       '{{"n": ' || i || '}}',
       $1::timestamptz + i * interval '1 second',
       CASE WHEN i % 7 = 0 AND i <= $2 THEN $1::timestamptz + interval '1 day' END,
       CASE WHEN i % 7 = 0 AND i <= $2 THEN 'worker' END
FROM generate_series(0, {parents} - 1) AS p,
     LATERAL generate_series(p, {rows} - 1, {parents}) AS i  -- parent by parent: each index is appended in order
"""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def _loaded(url: str, table: str) -> AsyncIterator[tuple[PostgresRepository, asyncpg.Connection]]:
    """Open a repository on ``table`` filled with a million records; drop it afterwards.

    Indexes are built after the load, which is several times faster than
    maintaining them row by row: the table is created without its primary key,
    loaded, given the key, and ``open()`` then adds the missing claim index
    and rules table as it would to any existing table.
    """
    options = {"postgres_url": url, "postgres_table_name": table}
    create_table = ddl(table).split(";")[0]
    without_key = create_table.replace(",\n    PRIMARY KEY (parent, name)", "").replace(" IF NOT EXISTS", "")
    assert without_key.count("PRIMARY KEY") == 0
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(without_key)  # fails, before anything is dropped, if the table exists
    except BaseException:
        await connection.close()
        raise
    try:
        await connection.execute(LOAD.format(table=quote(table), parents=PARENTS, rows=ROWS), T0, PARENTS * 1000)
        await connection.execute(f"ALTER TABLE {quote(table)} ADD PRIMARY KEY (parent, name)")
        async with backend.open(backend.settings(options)) as repository:
            assert isinstance(repository, PostgresRepository)
            await connection.execute(f"ANALYZE {quote(table)}")
            yield repository, connection
    finally:
        try:
            await backend.purge(backend.settings(options))
        finally:
            await connection.close()


@pytest.fixture(scope="module")
async def big(postgres_url: str) -> AsyncIterator[tuple[PostgresRepository, asyncpg.Connection]]:
    """A repository on a fresh table holding a million records, and a plain connection to inspect it."""
    async with _loaded(postgres_url, "big_" + uuid.uuid4().hex[:12]) as loaded:
        yield loaded


async def test_the_loaded_table_has_the_standard_indexes(big: tuple[PostgresRepository, asyncpg.Connection]) -> None:
    repository, connection = big
    table = repository.table_name
    assert await connection.fetchval(f"SELECT count(*) FROM {quote(table)}") == ROWS
    indexes = await connection.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", table)
    assert sorted(row["indexname"] for row in indexes) == sorted([f"{table}_pkey", index_name(table)])
    assert await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", quote(pauses_table_name(table)))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plan(connection: Any, sql: str, *args: Any, generic: bool = False) -> list[dict[str, Any]]:
    """The nodes of the plan for ``sql`` with ``args``; ``generic`` asks for the plan a prepared statement reuses."""
    async with connection.transaction():
        await connection.execute(f"SET LOCAL plan_cache_mode = {'force_generic_plan' if generic else 'auto'}")
        raw = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return list(_nodes(json.loads(raw)[0]["Plan"]))


def _assert_indexed(nodes: list[dict[str, Any]], table: str, *, index: str | None = None) -> None:
    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if n.get("Relation Name") == table]
    assert scans, f"no access to {table} in the plan"
    assert all(kind != "Seq Scan" for kind, _ in scans), scans
    if index is not None:
        assert any(name == index for _, name in scans), scans


async def _rolled_back(connection: Any, sql: str, *args: Any) -> list[Any]:
    """Run ``sql`` (an ``EXPLAIN ANALYZE`` of a write) in a transaction that is rolled back."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await transaction.rollback()


def _claim_args(parent: str, limit: int) -> tuple[Any, ...]:
    return parent, NOW, limit, NOW + timedelta(minutes=1), "planner"


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_claim_walks_the_due_index(big: tuple[PostgresRepository, asyncpg.Connection], generic: bool) -> None:
    repository, connection = big
    table = repository.table_name
    sql = repository._sql.claim
    nodes = await _plan(connection, sql, *_claim_args("parent-3", 100), generic=generic)
    _assert_indexed(nodes, table, index=index_name(table))
    # The due-index scan is bounded by the LIMIT: it stops after the rows it needs.
    limits = [n for n in nodes if n["Node Type"] == "Limit"]
    assert limits


async def test_claim_reads_only_the_due_rows(big: tuple[PostgresRepository, asyncpg.Connection]) -> None:
    repository, connection = big
    raw = await _rolled_back(
        connection, f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {repository._sql.claim}", *_claim_args("parent-4", 100)
    )
    plan = json.loads(raw[0][0])[0]
    top = plan["Plan"]
    assert top["Actual Rows"] == 100
    # Touching 100 rows (plus index pages) must not read a noticeable part of a 1M-row table.
    buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    assert buffers < 2000, buffers
    assert plan["Execution Time"] < 200


async def test_claim_skips_leased_rows_without_scanning_them(
    big: tuple[PostgresRepository, asyncpg.Connection],
) -> None:
    repository, _ = big
    # 1,000 records of parent-7 are due and every 7th of them is leased: the rest come back, earliest first.
    due = [i for i in range(7, PARENTS * 1000 + 1, PARENTS)]
    claimed = await repository.claim("parent-7", now=NOW, limit=5000, lease_until=NOW, token="probe")
    assert [r.name for r in claimed] == [f"task-{i:07d}" for i in due if i % 7 != 0]
    assert all(r.locked_by == "probe" for r in claimed)
    times = [r.scheduled_at for r in claimed]
    assert times == sorted(times)
    assert max(times) <= NOW


def _scan(nodes: list[dict[str, Any]], table: str) -> dict[str, Any]:
    """The one node of the plan that reads ``table`` through an index."""
    [scan] = [n for n in nodes if n.get("Relation Name") == table and "Index" in n["Node Type"]]
    return scan


async def test_claim_never_reads_held_records(big: tuple[PostgresRepository, asyncpg.Connection]) -> None:
    repository, connection = big
    table = repository.table_name
    explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {repository._sql.claim}"

    async def scan_of_claim(at: datetime) -> tuple[dict[str, Any], int]:
        args = ("parent-5", at, 100, at + timedelta(minutes=1), "planner")
        plan = json.loads((await _rolled_back(connection, explain, *args))[0][0])[0]
        scan = _scan(list(_nodes(plan["Plan"])), table)
        assert (scan["Index Name"], scan.get("Rows Removed by Filter", 0)) == (index_name(table), 0)
        return scan, scan["Shared Hit Blocks"] + scan.get("Shared Read Blocks", 0)

    # "task-000" holds records 0-9999: all of parent-5's due records (5, 15, ... 9995), 1,000 of them.
    assert await repository.pause(PauseRule("parent-5", "task-000", True), now=NOW) == 1000
    try:
        # The first scan after the pause passes the index entries of the rows' old versions once (and marks
        # them dead); from then on the held records cost nothing: a scan reads the descent of the index only
        # (visiting 1,000 rows would be 1,000 buffer accesses).
        _, once = await scan_of_claim(NOW)
        scan, blocks = await scan_of_claim(NOW)
        assert scan["Actual Rows"] == 0 and blocks <= 10, (once, blocks)
        # 100 seconds later 10 records not held are due (10,005 ... 10,095): the scan returns those only.
        scan, blocks = await scan_of_claim(NOW + timedelta(seconds=100))
        assert scan["Actual Rows"] == 10 and blocks <= 10, blocks
    finally:
        assert await repository.resume("parent-5", "task-000", prefix=True, now=NOW)
    claimed = await repository.claim("parent-5", now=NOW, limit=5, lease_until=NOW, token="probe")
    assert [r.name for r in claimed] == [f"task-{i:07d}" for i in (5, 15, 25, 45, 55)]  # 35 is leased


@pytest.mark.parametrize("prefix", [True, False], ids=["prefix", "name"])
async def test_pause_and_resume_read_only_the_matched_range(
    big: tuple[PostgresRepository, asyncpg.Connection], prefix: bool
) -> None:
    repository, connection = big
    table = repository.table_name
    sql = repository._sql
    # "task-00123" matches the 10 records 12,300-12,399 of parent-6 (12,306, 12,316, ...), among 100,000.
    match, count = ("task-00123", 10) if prefix else ("task-0012306", 1)
    pattern = ("task-00123%",) if prefix else ()  # the LIKE pattern the repository sends with a prefix
    pause, resume = ("parent-6", match, None, *pattern), ("parent-6", match, *pattern, repository.channel)
    for statement, args in ((sql.pause[prefix], pause), (sql.resume[prefix], resume)):
        explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}"
        raw = await _rolled_back(connection, explain, *args)
        nodes = list(_nodes(json.loads(raw[0][0])[0]["Plan"]))
        _assert_indexed(nodes, table, index=f"{table}_pkey")
        scans = [n for n in nodes if n.get("Relation Name") == table and "Index" in n["Node Type"]]
        for scan in scans:
            # The primary key's range of the prefix (the planner derives it from the pattern), not the parent.
            assert "name >=" in scan["Index Cond"] if prefix else "name =" in scan["Index Cond"], scan["Index Cond"]
            assert scan["Actual Rows"] <= count
        buffers = sum(n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0) for n in nodes[:1])
        assert buffers < 200, buffers


async def test_bulk_pause_of_a_whole_parent(big: tuple[PostgresRepository, asyncpg.Connection]) -> None:
    repository, connection = big
    table = repository.table_name
    held = f"SELECT count(*) FROM {quote(table)} WHERE parent = 'parent-8' AND paused"
    # One statement flags all 100,000 records of parent-8; claims of it then find nothing in the index.
    assert await repository.pause(PauseRule("parent-8", "", True), now=NOW) == 100_000
    try:
        assert await connection.fetchval(held) == 100_000
        explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {repository._sql.claim}"
        for _ in range(2):  # the first pass marks the old versions' index entries dead
            plan = json.loads((await _rolled_back(connection, explain, *_claim_args("parent-8", 100)))[0][0])[0]
        scan = _scan(list(_nodes(plan["Plan"])), table)
        assert scan["Actual Rows"] == 0
        # Claims of the other parents are unaffected.
        nodes = await _plan(connection, repository._sql.claim, *_claim_args("parent-9", 100))
        _assert_indexed(nodes, table, index=index_name(table))
    finally:
        assert await repository.resume("parent-8", "", prefix=True, now=NOW)
    assert await connection.fetchval(held) == 0


async def test_parents_walks_the_primary_key(big: tuple[PostgresRepository, asyncpg.Connection]) -> None:
    repository, connection = big
    explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {repository._sql.next_parents}"
    plan = json.loads(await connection.fetchval(explain, 4, "parent-2"))[0]
    nodes = list(_nodes(plan["Plan"]))
    assert all(n["Node Type"] != "Seq Scan" for n in nodes)
    # One descent of the primary key per parent, not a read of their 100,000 records each.
    assert plan["Plan"]["Shared Hit Blocks"] + plan["Plan"].get("Shared Read Blocks", 0) < 100
    assert await repository.parents(limit=4, continuation="parent-2") == (
        ["parent-3", "parent-4", "parent-5", "parent-6"],
        "parent-6",
    )


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_batch_writes_use_the_primary_key(
    big: tuple[PostgresRepository, asyncpg.Connection], generic: bool
) -> None:
    repository, connection = big
    table = repository.table_name
    sql = repository._sql
    parents = [f"parent-{i % PARENTS}" for i in range(100)]
    names = [f"task-{i:07d}" for i in range(100)]
    tokens = ["worker"] * 100
    times = [NOW + timedelta(hours=1)] * 100
    positions = list(range(100))
    pkey = f"{table}_pkey"
    states = [None, '{"attempt": 2}'] * 50
    releases = [True, False] * 50
    commit = await _plan(
        connection, sql.commit, parents, names, tokens, times, states, releases, positions, generic=generic
    )
    _assert_indexed(commit, table, index=pkey)
    unlock = await _plan(connection, sql.unlock, parents, names, tokens, positions, generic=generic)
    _assert_indexed(unlock, table, index=pkey)
    specs = ["{}"] * 100
    for mode, statement in sql.register.items():
        args: list[Any] = [parents, names, specs, times, states, repository.channel]
        if "$7" in statement:
            args.append(NOW)
        nodes = await _plan(connection, statement, *args, generic=generic)
        assert all(n["Node Type"] != "Seq Scan" for n in nodes if n.get("Relation Name") == table), mode


async def test_list_page_uses_the_primary_key(big: tuple[PostgresRepository, asyncpg.Connection]) -> None:
    repository, connection = big
    table = repository.table_name
    nodes = await _plan(connection, repository._sql.next_page, "parent-1", 101, "task-0000051", generic=True)
    _assert_indexed(nodes, table, index=f"{table}_pkey")


async def _print_plans() -> None:
    """Load a table like the tests do and print the text plan of a claim, for the README."""
    url = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    async with _loaded(url, "pyncette_plan_demo") as (repository, connection):
        claim = f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {repository._sql.claim}"
        rows = await _rolled_back(connection, claim, *_claim_args("parent-3", 100))
        print("\n".join(row[0] for row in rows))


if __name__ == "__main__":
    asyncio.run(_print_plans())
