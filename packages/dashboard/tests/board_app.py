"""The app the browser tests run in other processes: every run appends a line to $DASHBOARD_TEST_LOG."""

from __future__ import annotations

import os
from datetime import timedelta

from pyncette import Context, Pyncette

app = Pyncette(poll_interval=timedelta(milliseconds=200))


def _note(line: str) -> None:
    with open(os.environ["DASHBOARD_TEST_LOG"], "a", encoding="utf-8") as log:
        log.write(line + "\n")


@app.task(schedule="* * * * * *")
async def tick(context: Context) -> None:
    """Every second."""
    _note(f"tick {context.scheduled_at.isoformat()}")


@app.task(schedule="0 3 * * *", timezone="Europe/Dublin", history=5)
async def nightly(context: Context) -> None:
    """Once a day: runs in the tests only when triggered."""
    _note("nightly")


@app.dynamic_task(schedule="0 9 * * mon-fri", timezone="America/New_York")
async def remind(context: Context) -> None:
    _note(f"remind {context.task.name}")
