"""Backend set-up for the pyncette 1.1.0 side of the benchmarks (imported only by the legacy_*.py scripts).

Runs inside the isolated 1.1.0 venv: it may import 1.1.0's drivers (redis, asyncpg, aiomysql), never the
workspace packages.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = {
    "mysql_host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
    "mysql_port": int(os.environ.get("MYSQL_PORT", "3306")),
    "mysql_user": os.environ.get("MYSQL_USER", "root"),
    "mysql_password": os.environ.get("MYSQL_PASSWORD", ""),
    "mysql_database": os.environ.get("MYSQL_DATABASE", "test"),
}

# 1.1.0's table, learnt from its source: it creates these columns and then a functional index
# (parent_name, GREATEST(COALESCE(locked_until, 0), COALESCE(execute_after, 0))) that MariaDB refuses.
# We create the table ourselves with a plain index on (parent_name, execute_after) and pass
# mysql_skip_table_create=True.
MYSQL_NOTE = (
    "MySQL: 1.1.0 cannot create its table on MariaDB (functional index); the benchmark created the table "
    "for it (same columns, plain index on (parent_name, execute_after)) and passed mysql_skip_table_create=True"
)


@contextlib.asynccontextmanager
async def mysql_cursor() -> AsyncIterator[Any]:
    """A cursor on an autocommit connection to the benchmark's MySQL/MariaDB database."""
    import aiomysql

    conn = await aiomysql.connect(
        host=MYSQL["mysql_host"],
        port=MYSQL["mysql_port"],
        user=MYSQL["mysql_user"],
        password=MYSQL["mysql_password"],
        db=MYSQL["mysql_database"],
        autocommit=True,
    )
    try:
        async with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


async def _mysql(sql: list[str]) -> None:
    async with mysql_cursor() as cur:
        for statement in sql:
            await cur.execute(statement)


async def legacy_factory(backend: str, table: str, workdir: str, endpoint: str) -> tuple[Any, dict[str, Any], str]:
    """(repository_factory, options, note) for 1.1.0 on fresh storage."""
    await cleanup(backend, table, {})
    if backend == "memory":
        from pyncette.sqlite import sqlite_repository

        return sqlite_repository, {"sqlite_database": ":memory:"}, ""
    if backend == "sqlite":
        from pyncette.sqlite import sqlite_repository

        return sqlite_repository, {"sqlite_database": str(Path(workdir) / f"{table}.db")}, ""
    if backend == "redis":
        from pyncette.redis import redis_repository

        return redis_repository, {"redis_url": REDIS_URL, "redis_namespace": table}, ""
    if backend == "postgres":
        from pyncette.postgres import postgres_repository

        return postgres_repository, {"postgres_url": POSTGRES_URL, "postgres_table_name": table}, ""
    if backend == "mysql":
        from pyncette.mysql import mysql_repository

        await _mysql(
            [
                f"""CREATE TABLE {table} (
                    name VARCHAR(256) PRIMARY KEY,
                    parent_name VARCHAR(256),
                    locked_until DOUBLE,
                    locked_by VARCHAR(256),
                    execute_after DOUBLE,
                    task_spec TEXT,
                    INDEX due_{table} (parent_name, execute_after)
                )"""
            ]
        )
        options = {**MYSQL, "mysql_table_name": table, "mysql_skip_table_create": True}
        return mysql_repository, options, MYSQL_NOTE
    if backend == "dynamodb":
        from pyncette.dynamodb import dynamodb_repository

        return (
            dynamodb_repository,
            {"dynamodb_endpoint": endpoint, "dynamodb_region_name": "us-east-1", "dynamodb_table_name": table},
            "",
        )
    raise ValueError(backend)


async def cleanup(backend: str, table: str, options: dict[str, Any]) -> None:
    """Remove what 1.1.0 stored for ``table`` (its Redis namespace, SQL table); moto and files are thrown away."""
    if backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"pyncette:{table}:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()
    elif backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await conn.close()
    elif backend == "mysql":
        await _mysql([f"DROP TABLE IF EXISTS {table}"])


def peak_rss_mb() -> float:
    """Peak RSS in MiB: VmHWM (``ru_maxrss`` survives ``execve``, so it would report the parent's peak)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
