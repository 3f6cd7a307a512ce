"""Query plans on a large table: due-work lookup and batch statements must use indexes, never scan the table.

One module-scoped table of 1,000,000 records (10 parents x 100,000) serves
every test. Run this file directly to print the plans quoted in the README::

    python packages/backend-mysql/tests/test_mysql_plans.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import aiomysql
import pytest

from pyncette.abc import Completion, PauseRule, Repository
from pyncette_mysql import MySQLRepository, backend
from pyncette_mysql._repository import claim_query, key_filters, list_query, rule_filter
from pyncette_mysql._schema import DUE_INDEX

pytestmark = pytest.mark.anyio

ROWS = 1_000_000
PARENTS = 10
PER_PARENT = ROWS // PARENTS
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
#: Record ``task-i`` belongs to ``parent-(i // 100000)`` and is due at T0 + (i % 100000) seconds, so at NOW
#: 1,001 records per parent are due; in parent-3 every 7th of those is leased until far in the future.
NOW = T0 + timedelta(seconds=1000)
LEASED_PARENT = "parent-3"

_DIGITS = " UNION ALL ".join(f"SELECT {d} AS d" for d in range(10))
#: Rows in primary-key and due-index order, so both B-trees are appended to (several times faster).
_NUMBERS = {
    True: "SELECT seq AS n FROM seq_0_to_999999",  # MariaDB's SEQUENCE engine
    False: "SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d AS n FROM "
    + ", ".join(f"({_DIGITS}) AS {alias}" for alias in "abcefg"),
}
LOAD = """
INSERT INTO `{table}` (`parent`, `name`, `spec`, `scheduled_at`)
SELECT CONCAT('parent-', n DIV {per_parent}), CONCAT('task-', LPAD(n, 7, '0')), '{{}}',
       TIMESTAMP '2030-01-01 00:00:00' + INTERVAL (n MOD {per_parent}) SECOND
FROM ({numbers}) AS numbers ORDER BY n
"""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def query(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cursor:
        await cursor.execute(sql)
        return list(await cursor.fetchall())


async def explain(conn: Any, sql: str) -> dict[str, Any]:
    async with conn.cursor(aiomysql.DictCursor) as cursor:
        await cursor.execute("EXPLAIN " + sql)
        (row,) = await cursor.fetchall()
        return dict(row)


@contextlib.asynccontextmanager
async def loaded(options: dict[str, Any]) -> AsyncIterator[tuple[MySQLRepository, Any]]:
    """A repository on a fresh table holding a million records, and a plain connection to inspect it."""
    table = "big_" + uuid.uuid4().hex[:12]
    options = {**options, "mysql_table_name": table}
    conn = await aiomysql.connect(
        host=options["mysql_host"],
        port=options["mysql_port"],
        user=options["mysql_user"],
        password=options["mysql_password"],
        db=options["mysql_database"],
        autocommit=True,
        charset="utf8mb4",
    )
    try:
        async with backend.open(backend.settings(options)) as repository:
            assert isinstance(repository, MySQLRepository)
            ((version,),) = await query(conn, "SELECT VERSION()")
            numbers = _NUMBERS["mariadb" in version.lower()]
            await query(conn, LOAD.format(table=table, per_parent=PER_PARENT, numbers=numbers))
            await query(
                conn,
                f"UPDATE `{table}` SET `locked_until` = '2030-02-01', `locked_by` = 'worker' "
                f"WHERE `parent` = '{LEASED_PARENT}' AND `scheduled_at` <= '2030-01-01 00:16:40' "
                "AND MOD(SUBSTRING(`name`, 6), 7) = 0",
            )
            await query(conn, f"ANALYZE TABLE `{table}`")
            yield repository, conn
    finally:
        try:
            await backend.purge(backend.settings(options))
        finally:
            conn.close()


@pytest.fixture(scope="module")
async def big(mysql_options: dict[str, Any]) -> AsyncIterator[tuple[MySQLRepository, Any]]:
    async with loaded(mysql_options) as pair:
        yield pair


async def test_the_table_holds_a_million_records(big: tuple[MySQLRepository, Any]) -> None:
    repository, conn = big
    assert await query(conn, f"SELECT COUNT(*) FROM `{repository._table}`") == [(ROWS,)]


async def test_claim_query_uses_the_due_index(big: tuple[MySQLRepository, Any]) -> None:
    repository, conn = big
    plan = await explain(conn, claim_query(repository._table, conn.escape, "parent-5", NOW, 100))
    assert plan["key"] == DUE_INDEX
    assert plan["type"] == "range"
    assert int(plan["rows"]) < 5000  # the due range (about 1,000), not the parent's 100,000 or the table
    assert "filesort" not in (plan["Extra"] or "")


async def status(conn: Any) -> dict[str, int]:
    return {name: int(value) for name, value in await query(conn, "SHOW SESSION STATUS LIKE 'Handler_read%'")}


async def test_claim_reads_only_the_rows_it_returns(big: tuple[MySQLRepository, Any]) -> None:
    repository, conn = big
    before = await status(conn)
    await query(conn, "START TRANSACTION")
    rows = await query(conn, claim_query(repository._table, conn.escape, "parent-5", NOW, 100))
    await query(conn, "ROLLBACK")
    after = await status(conn)
    read = sum(after[k] - before[k] for k in after if k != "Handler_read_rnd_next") - 1  # minus SHOW STATUS itself
    assert len(rows) == 100
    assert read < 300, read
    assert after["Handler_read_rnd_next"] - before["Handler_read_rnd_next"] < 1000  # no table scan


async def test_claim_is_fast_and_earliest_first(big: tuple[MySQLRepository, Any]) -> None:
    repository, _ = big
    started = time.perf_counter()
    claimed = await repository.claim("parent-7", now=NOW, limit=200, lease_until=NOW + timedelta(minutes=1), token="t")
    elapsed = time.perf_counter() - started
    assert [r.name for r in claimed] == [f"task-{700000 + i:07d}" for i in range(200)]
    assert elapsed < 0.5, elapsed
    assert (
        await repository.commit([Completion(r.parent, r.name, "t", T0 + timedelta(days=400)) for r in claimed])
        == [True] * 200
    )


async def test_claim_skips_leased_rows(big: tuple[MySQLRepository, Any]) -> None:
    repository: Repository = big[0]
    claimed = await repository.claim(LEASED_PARENT, now=NOW, limit=2000, lease_until=NOW, token="x")
    assert len(claimed) == 1001 - 143  # 143 of the 1,001 due records are leased
    assert all(int(r.name[5:]) % 7 for r in claimed)


async def test_batch_statements_use_the_primary_key(big: tuple[MySQLRepository, Any]) -> None:
    repository, conn = big
    keys = [(f"parent-{i % PARENTS}", f"task-{i * 9973 % ROWS:07d}") for i in range(500)]
    conditions = key_filters(conn.escape, keys)
    assert len(conditions) == 1
    plan = await explain(conn, f"SELECT `parent`, `name` FROM `{repository._table}` WHERE {conditions[0]} FOR UPDATE")
    assert (plan["key"], plan["type"]) == ("PRIMARY", "range")
    assert int(plan["rows"]) <= 1000


async def test_list_page_uses_the_primary_key(big: tuple[MySQLRepository, Any]) -> None:
    repository, conn = big
    plan = await explain(conn, list_query(repository._table, conn.escape, "parent-2", "task-0200500", 101))
    assert (plan["key"], plan["type"]) == ("PRIMARY", "range")
    assert "filesort" not in (plan["Extra"] or "")


async def test_held_records_cost_a_claim_nothing(big: tuple[MySQLRepository, Any]) -> None:
    """10,000 held records of parent-8, every due one among them: the claim's index range starts past them."""
    repository, conn = big
    assert await repository.pause(PauseRule("parent-8", "task-080", True), now=NOW) == 10_000
    try:
        plan = await explain(conn, claim_query(repository._table, conn.escape, "parent-8", NOW, 100))
        assert (plan["key"], plan["type"]) == (DUE_INDEX, "range")
        before = await status(conn)
        await query(conn, "START TRANSACTION")
        rows = await query(conn, claim_query(repository._table, conn.escape, "parent-8", NOW, 100))
        await query(conn, "ROLLBACK")
        after = await status(conn)
        assert rows == []
        assert sum(after[k] - before[k] for k in after) < 10
    finally:
        assert await repository.resume("parent-8", "task-080", prefix=True, now=NOW)
    claimed = await repository.claim("parent-8", now=NOW, limit=2000, lease_until=NOW, token="x")
    assert len(claimed) == 1001


async def test_pause_reads_only_the_records_it_matches(big: tuple[MySQLRepository, Any]) -> None:
    repository, conn = big
    where = "`parent` = 'parent-9' AND " + rule_filter(conn.escape, "task-09005", prefix=True, ordered=True)
    plan = await explain(conn, f"SELECT COUNT(*) FROM `{repository._table}` WHERE {where} FOR UPDATE")
    assert (plan["key"], plan["type"]) == ("PRIMARY", "range")
    assert int(plan["rows"]) < 300  # the 100 matching records, not the parent's 100,000


async def test_parents_is_a_loose_index_scan(big: tuple[MySQLRepository, Any]) -> None:
    repository, conn = big
    plan = await explain(conn, f"SELECT DISTINCT `parent` FROM `{repository._table}` ORDER BY `parent` LIMIT 4")
    assert "Using index for group-by" in (plan["Extra"] or "")
    seen: list[str] = []
    token = None
    while True:
        page, token = await repository.parents(limit=4, continuation=token)
        seen.extend(page)
        if token is None:
            break
    assert seen == [f"parent-{i}" for i in range(PARENTS)]


async def _print_plans() -> None:
    options = {
        "mysql_host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
        "mysql_port": int(os.environ.get("MYSQL_PORT", "3306")),
        "mysql_user": os.environ.get("MYSQL_USER", "root"),
        "mysql_password": os.environ.get("MYSQL_PASSWORD", ""),
        "mysql_database": os.environ.get("MYSQL_DATABASE", "test"),
    }
    async with loaded(options) as (repository, conn):
        ((version,),) = await query(conn, "SELECT VERSION()")
        print(f"-- {version}, {ROWS:,} rows")
        statements = {
            "claim": claim_query(repository._table, conn.escape, "parent-5", NOW, 100),
            "batch": f"SELECT `parent`, `name`, `locked_by` FROM `{repository._table}` WHERE "
            + key_filters(
                conn.escape, [("parent-1", "task-0100007"), ("parent-1", "task-0100042"), ("parent-4", "task-0400001")]
            )[0]
            + " FOR UPDATE",
            "pause": f"SELECT COUNT(*) FROM `{repository._table}` WHERE `parent` = 'parent-9' AND "
            + rule_filter(conn.escape, "task-09005", prefix=True, ordered=True)
            + " FOR UPDATE",
            "parents": f"SELECT DISTINCT `parent` FROM `{repository._table}` ORDER BY `parent` LIMIT 101",
        }
        for label, sql in statements.items():
            print(f"\n{label}: {sql.replace(repository._table, 'pyncette_tasks')}")
            plan = await explain(conn, sql)
            print(" | ".join(f"{k}={v}" for k, v in plan.items()))


if __name__ == "__main__":
    asyncio.run(_print_plans())
