"""A small Pyncette app on the embedded SQLite backend that prints every execution.

hatch run demo              # runs until Ctrl-C
hatch run demo --seconds 5  # stops by itself after 5 seconds
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio

from pyncette import Context, Pyncette, PyncetteContext


def build(database: Path) -> Pyncette:
    app = Pyncette(sqlite_database=str(database), poll_interval=timedelta(seconds=0.5))

    @app.task(schedule="* * * * * *")
    async def every_second(context: Context) -> None:
        print(f"[static ] every_second  scheduled {context.scheduled_at:%H:%M:%S}", flush=True)

    @app.task(interval=timedelta(seconds=2))
    async def every_two_seconds(context: Context) -> None:
        print(f"[static ] every_2s      scheduled {context.scheduled_at:%H:%M:%S}", flush=True)

    @app.dynamic_task()
    async def reminder(context: Context) -> None:
        print(f"[dynamic] reminder {context.task.name!r}: {context.args['text']}", flush=True)

    @app.fixture()
    async def greeting(app_context: PyncetteContext):  # type: ignore[no-untyped-def]
        soon = datetime.now(timezone.utc)
        for seconds in (1, 3):
            at = soon + timedelta(seconds=seconds)
            await app_context.schedule_task(reminder, f"in-{seconds}s", execute_at=at, text=f"{seconds} s after start")
        yield "hello"

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--database", type=Path, default=None, help="SQLite file (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    with tempfile.TemporaryDirectory(prefix="pyncette-demo-") as tmp:
        database = args.database or Path(tmp) / "demo.db"
        print(f"Pyncette demo on {database} (Ctrl-C to stop)", flush=True)
        anyio.run(build(database).run_until_signalled, args.seconds)
    print("Stopped cleanly.", flush=True)


if __name__ == "__main__":
    main()
