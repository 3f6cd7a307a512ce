"""The 1.x side of ``migrate.py``: fills storage with N instances in 1.1.0's layout (run with that venv's python).

1.1.0 itself creates the store (table, namespace) and registers the first ``--sample`` instances through its
public API (``ctx.schedule_task``), one call at a time, as a 1.x app would. 1.1.0 has no bulk API and that
path is slow (one transaction per instance), so for SQLite, PostgreSQL and MySQL the rest are written
directly in 1.1.0's table layout, with 1.1.0's own ``Task`` objects giving the canonical name, the parent,
the JSON spec (``as_spec()``) and the next run (``get_next_execution``): the rows are those
``register_task`` would have inserted. For other backends every instance goes through ``schedule_task``
(``--concurrency`` calls at a time). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from _legacy_common import POSTGRES_URL, legacy_factory, mysql_cursor

from pyncette import Context, Pyncette

DIRECT = ("sqlite", "postgres", "mysql")
CHUNK = 5000


def instance_options(i: int, now: datetime) -> dict[str, Any]:
    """A mix of the three kinds of schedule, each instance with arguments; none due within the hour."""
    kind = i % 3
    if kind == 0:
        return {"schedule": "0 9 * * *", "timezone": "Europe/Dublin", "user": f"u{i}"}
    if kind == 1:
        return {"interval": timedelta(hours=1 + i % 24), "user": f"u{i}", "n": i}
    return {"execute_at": now + timedelta(days=1, seconds=i), "user": f"u{i}"}


def row(template: Any, i: int, now: datetime) -> tuple[str, str, str, datetime]:
    task = template.instantiate(f"i{i:08d}", **instance_options(i, now))
    return (
        task.canonical_name,
        template.canonical_name,
        json.dumps(task.as_spec()),
        task.get_next_execution(now, None),
    )


async def write_direct(backend: str, options: dict[str, Any], rows: list[tuple[str, str, str, datetime]]) -> None:
    if backend == "sqlite":
        import aiosqlite

        table = options.get("sqlite_table_name", "pyncette_tasks")
        async with aiosqlite.connect(options["sqlite_database"]) as db:
            await db.executemany(
                f"INSERT INTO {table} (name, parent_name, task_spec, execute_after) VALUES (?, ?, ?, ?)",
                [(n, p, s, at.timestamp()) for n, p, s, at in rows],
            )
            await db.commit()
    elif backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.copy_records_to_table(
                options["postgres_table_name"],
                records=rows,
                columns=["name", "parent_name", "task_spec", "execute_after"],
            )
        finally:
            await conn.close()
    elif backend == "mysql":
        async with mysql_cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {options['mysql_table_name']} (name, parent_name, task_spec, execute_after) "
                "VALUES (%s, %s, %s, %s)",
                [(n, p, s, at.timestamp()) for n, p, s, at in rows],
            )
    else:
        raise ValueError(backend)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    factory, options, note = await legacy_factory(args.backend, args.table, args.workdir, args.endpoint)
    app = Pyncette(repository_factory=factory, **options)

    @app.dynamic_task(name="bench_job")
    async def bench_job(context: Context) -> None:
        pass

    n = args.instances
    direct = args.backend in DIRECT
    via_api = min(n, args.sample) if direct else n
    async with app.create() as ctx:
        now = datetime.now(timezone.utc)
        start = time.perf_counter()
        for first in range(0, via_api, args.concurrency):
            await asyncio.gather(
                *(
                    ctx.schedule_task(bench_job, f"i{i:08d}", **instance_options(i, now))
                    for i in range(first, min(via_api, first + args.concurrency))
                )
            )
        api_s = time.perf_counter() - start
    start = time.perf_counter()
    if direct:
        for first in range(via_api, n, CHUNK):
            await write_direct(
                args.backend, options, [row(bench_job, i, now) for i in range(first, min(n, first + CHUNK))]
            )
    direct_s = time.perf_counter() - start
    return {
        "instances": n,
        "via_1x_api": via_api,
        "via_1x_api_per_s": via_api / api_s if api_s else None,
        "written_directly": n - via_api,
        "written_directly_per_s": (n - via_api) / direct_s if n > via_api and direct_s else None,
        "note": note,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--instances", type=int, required=True)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
