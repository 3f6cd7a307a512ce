"""State that survives restarts: the embedded SQLite backend on a file.

    python examples/persistence.py --seconds 3   # first run: a fresh database
    python examples/persistence.py --seconds 3   # again: picks up the state the first run stored

A task's next run and lease live in storage, not in the process. After a
restart, a task catches up every run it missed (one per tick), unless it was
declared with ``fast_forward=True``, which skips straight to the next
schedule point. Several processes can share one SQLite file: each due run is
claimed by exactly one of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio

from pyncette import Context, Pyncette, PyncetteContext, TaskState


def build(database: Path) -> Pyncette:
    """The app, storing its state in ``database`` (created on first use)."""
    app = Pyncette(sqlite_database=str(database), poll_interval=timedelta(seconds=0.5))

    @app.task(interval=timedelta(seconds=1))
    async def catch_up(context: Context) -> None:
        # After a pause, scheduled_at lags behind the clock until every missed run has happened.
        print(f"catch_up      due {context.scheduled_at:%H:%M:%S}", flush=True)

    @app.task(interval=timedelta(seconds=1), fast_forward=True)
    async def skip_missed(context: Context) -> None:
        print(f"skip_missed   due {context.scheduled_at:%H:%M:%S}", flush=True)

    # A fixture runs once before the first tick (and is torn down after shutdown): here it reports
    # what the database remembers. Its value is available to tasks as context.stored_state.
    @app.fixture()
    async def stored_state(app_context: PyncetteContext) -> AsyncIterator[TaskState | None]:
        state = await app_context.get_task(catch_up)
        if state is None:
            print(f"{database}: fresh database, nothing stored yet", flush=True)
        else:
            print(f"{database}: found stored state, catch_up is due at {state.scheduled_at:%H:%M:%S}", flush=True)
        yield state

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    parser.add_argument("--database", type=Path, default=Path("pyncette-example.db"), help="SQLite file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    anyio.run(build(args.database).run_until_signalled, args.seconds)
    print("persistence: stopped cleanly; run me again to see the stored state", flush=True)


if __name__ == "__main__":
    main()
