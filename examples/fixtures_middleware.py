"""Fixtures (shared resources with setup and teardown) and middleware (code around every run).

    python examples/fixtures_middleware.py --seconds 5

* ``@app.fixture()`` is an async generator taking the app context. It is set
  up before the first tick and torn down, in reverse order, after a graceful
  shutdown; what it yields is available to every task as ``context.<name>``.
* ``@app.middleware`` is ``async def mw(context, call_next)``. Middlewares run
  in declaration order around every task run: logging, timing, retries,
  tracing, error reporting...
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel

from pyncette import Context, Pyncette, PyncetteContext
from pyncette.model import NextFunc

app = Pyncette(poll_interval=timedelta(seconds=0.5))


class Database:
    """Stands in for a real connection pool."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def insert(self, row: dict[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()  # a real driver would do I/O here
        self.rows.append(row)


class TransientError(Exception):
    """An error worth retrying."""


@app.fixture()
async def db(app_context: PyncetteContext) -> AsyncIterator[Database]:
    print("fixture db: connected", flush=True)
    database = Database()
    try:
        yield database  # tasks use it as context.db
    finally:
        print(f"fixture db: closed after {len(database.rows)} insert(s)", flush=True)


@app.fixture(name="settings")
async def load_settings(app_context: PyncetteContext) -> AsyncIterator[dict[str, str]]:
    yield {"environment": "example"}


@app.middleware
async def timing(context: Context, call_next: NextFunc) -> None:
    """Outermost: times the run, retries included."""
    started = time.perf_counter()
    try:
        await call_next()
    finally:
        print(f"[timing] {context.task.name} took {1000 * (time.perf_counter() - started):.1f} ms", flush=True)


@app.middleware
async def retry_transient(context: Context, call_next: NextFunc) -> None:
    """Retries a run up to three times when it raises TransientError."""
    for attempt in range(1, 4):
        try:
            await call_next()
            return
        except TransientError as exc:
            print(f"[retry] {context.task.name} attempt {attempt} failed: {exc}", flush=True)
    raise RuntimeError(f"{context.task.name} failed three times")


@app.task(interval=timedelta(seconds=0.5))
async def record_visit(context: Context) -> None:
    await context.db.insert({"at": context.scheduled_at.isoformat(), "env": context.settings["environment"]})
    print(f"record_visit: {len(context.db.rows)} row(s) in the database", flush=True)


_attempts = itertools.count(1)


@app.task(interval=timedelta(seconds=1))
async def flaky(context: Context) -> None:
    if next(_attempts) % 2 == 1:  # every other attempt fails
        raise TransientError("the upstream service hiccuped")
    print("flaky: succeeded", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    anyio.run(app.run_until_signalled, args.seconds)
    print("fixtures_middleware: stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
