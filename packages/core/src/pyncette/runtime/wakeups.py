"""Listening for wake-ups pushed by other processes (backends with the ``notifications`` capability).

A hint only wakes the loop sooner: the loop's tick claims whatever is due, as it would at the next poll.
Hints arriving in a flood are coalesced: the loop is woken at most once per :data:`WINDOW`, so many
registrations elsewhere cause a few ticks, not one claim each. A lost connection is opened again after
a growing pause; meanwhile polling every ``poll_interval`` finds the work.
"""

from __future__ import annotations

import time
from datetime import datetime

import anyio
from anyio.abc import TaskGroup

from ..abc import Repository
from ..redaction import get_logger
from .agenda import Agenda

logger = get_logger("pyncette")

#: The loop is woken at most once per this many seconds by hints.
WINDOW = 0.005
#: The pauses before opening a lost wake-up connection again (seconds): doubled up to the maximum.
FIRST_PAUSE, MAX_PAUSE = 0.1, 30.0


class Listener:
    """Reads :meth:`Repository.wakeups` for as long as the loop runs (cancelled with it)."""

    def __init__(self, repository: Repository, agenda: Agenda) -> None:
        self._repository = repository
        self._agenda = agenda
        self._last_wake = 0.0
        self._held: datetime | None = None  # the earliest hint not yet passed on

    def available(self) -> bool:
        """Whether the backend pushes wake-ups at all."""
        return self._repository.wakeups() is not None

    async def run(self) -> None:
        pause = FIRST_PAUSE
        while True:
            source = self._repository.wakeups()
            if source is None:
                return
            try:
                async with source as hints, anyio.create_task_group() as tg:
                    pause = FIRST_PAUSE
                    async for due in hints:
                        self._hint(due, tg)
                logger.info("The wake-up connection closed; opening it again (polling meanwhile)")
            except Exception as exc:
                logger.warning("Wake-ups from other processes are unavailable (polling meanwhile): %s", exc)
            await anyio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)

    def _hint(self, due: datetime, tg: TaskGroup) -> None:
        now = time.monotonic()
        if now - self._last_wake >= WINDOW and self._held is None:
            self._last_wake = now
            self._agenda.hinted(due)
            return
        if self._held is None:
            tg.start_soon(self._flush, self._last_wake + WINDOW - now)
        self._held = due if self._held is None else min(self._held, due)

    async def _flush(self, delay: float) -> None:
        await anyio.sleep(max(delay, 0.0))
        due, self._held = self._held, None
        self._last_wake = time.monotonic()
        if due is not None:
            self._agenda.hinted(due)


__all__ = ["Listener"]
