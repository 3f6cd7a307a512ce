"""Migrate: how fast ``pyncette migrate --from-1x`` converts a 1.x store of N dynamic instances.

pyncette 1.1.0 (its own venv) fills the store first, through ``legacy_migrate.py``: it creates the table or
namespace and registers ``--sample`` instances with ``ctx.schedule_task``; for SQLite, PostgreSQL and MySQL
the rest are written directly in 1.1.0's table layout (1.1.0 has no bulk API; the rows are built with its
own ``Task`` objects, so they are what ``register_task`` inserts), for other backends every instance goes
through ``schedule_task``. A third of the instances have a cron schedule with a time zone, a third an
interval, a third ``execute_at``; all have arguments.

Then the migration runs in this process exactly as the command does (:func:`pyncette.migration.migrate`:
set aside, stream, convert, register in ``CREATE`` mode) and is timed from the first read to the last
write; rows/s is N over that time. Works for every backend whose descriptor implements ``legacy()``.

    hatch run bench:migrate --backend postgres --instances 100000
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backend_options, base_parser, maybe_moto, peak_rss_mb, print_table, run_legacy, workdir, write_json

from pyncette import Context, Pyncette, backends
from pyncette.migration import BATCH, migrate

TAG = "bench_migrate"  # 1.1.0 accepts lower-case letters and underscores only


def app_tasks() -> list[Any]:
    """The tasks of the app the store belongs to (the template legacy_migrate.py registers under)."""
    app = Pyncette()

    @app.dynamic_task(name="bench_job")
    async def bench_job(context: Context) -> None:
        pass

    return app.tasks


async def drop_everything(name: str, options: dict[str, Any]) -> None:
    descriptor = backends.load(name)
    settings = descriptor.settings(options)
    legacy = descriptor.legacy(settings)
    if legacy is not None:
        async with legacy as store:
            if await store.has_backup():
                await store.drop_backup()
    await descriptor.purge(settings)


async def measure(name: str, options: dict[str, Any], instances: int) -> dict[str, Any]:
    descriptor = backends.load(name)
    settings = descriptor.settings(options)
    legacy = descriptor.legacy(settings)
    if legacy is None:
        raise SystemExit(f"backend {name!r} implements no legacy(): nothing to migrate from")
    progress: list[tuple[int, float]] = []
    async with legacy as store:
        start = time.perf_counter()
        report = await migrate(
            store,
            lambda: descriptor.open(settings),
            app_tasks(),
            now=datetime.now(timezone.utc),
            progress=lambda done: progress.append((done, time.perf_counter() - start)),
        )
        seconds = time.perf_counter() - start
    migrated = sum(t.migrated for t in report.tasks.values())
    if migrated != instances or report.failed:
        raise RuntimeError(f"migrated {migrated} of {instances} ({report.failed} failed): {report.as_dict()}")
    return {
        "where": report.where,
        "migrated": migrated,
        "seconds": seconds,
        "rows_per_s": instances / seconds,
        "batch": BATCH,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=1000, help="instances 1.1.0 registers through its API")
    parser.add_argument("--concurrency", type=int, default=50, help="1.1.0 schedule_task calls at a time")
    args = parser.parse_args()
    with workdir() as wd, maybe_moto(args.backend) as endpoint:
        name, options = backend_options(args.backend, TAG, workdir=wd, endpoint=endpoint)
        anyio.run(drop_everything, name, options)
        try:
            print(f"pyncette 1.1.0 writes {args.instances:,} instances ...", file=sys.stderr)
            filled = run_legacy(
                "legacy_migrate.py",
                [
                    *("--backend", args.backend, "--table", TAG, "--workdir", str(wd)),
                    *("--endpoint", endpoint or "", "--instances", str(args.instances)),
                    *("--sample", str(args.sample), "--concurrency", str(args.concurrency)),
                ],
            )
            if "error" in filled:
                raise SystemExit(f"1.1.0 could not fill the store: {filled['error']}")
            print("migrating ...", file=sys.stderr)
            result = anyio.run(measure, name, options, args.instances)
        finally:
            anyio.run(drop_everything, name, options)
    print(f"backend={args.backend} instances={args.instances} batch={BATCH}")
    if filled.get("note"):
        print(filled["note"])
    print()
    print_table(
        f"migrate --from-1x, {args.backend}",
        ["instances", "1.x via API", "1.x written directly", "migration s", "rows/s", "peak RSS MiB"],
        [
            [
                args.instances,
                filled["via_1x_api"],
                filled["written_directly"],
                result["seconds"],
                result["rows_per_s"],
                result["peak_rss_mb"],
            ]
        ],
    )
    write_json(
        "migrate",
        args.backend,
        {
            "parameters": {"instances": args.instances, "sample": args.sample, "batch": BATCH},
            "legacy_fill": filled,
            "result": result,
        },
        disabled=args.no_json,
    )


if __name__ == "__main__":
    main()
