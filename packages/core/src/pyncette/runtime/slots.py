"""Concurrency accounting: how many runs the loop may claim now."""

from __future__ import annotations

from collections.abc import Callable

import anyio


class Slots:
    """Counts the runs this process has claimed and not yet settled.

    ``concurrency_limit`` bounds the task bodies running at once. Runs whose body is over and that
    only wait for their commit (at most another ``concurrency_limit``) do not take a slot, so the next
    claim overlaps the last commit.
    """

    def __init__(self, limit: int, on_freed: Callable[[], None]) -> None:
        self.limit = limit
        self.running = 0  # claimed runs not yet settled (committed, unlocked or given up)
        self.committing = 0  # of those, the ones whose body is over and whose commit is queued or in flight
        self.starved = False  # the loop wanted to claim more than fitted: wake it when a slot frees
        self._on_freed = on_freed
        self._idle = anyio.Event()
        self._idle.set()

    def free(self) -> int:
        """How many runs may be claimed now."""
        limit = self.limit
        return min(limit - (self.running - self.committing), 2 * limit - self.running)

    def taken(self) -> None:
        """A run was claimed."""
        if self.running == 0:
            self._idle = anyio.Event()
        self.running += 1

    def body_done(self) -> None:
        """A run's body is over; its commit is on its way."""
        self.committing += 1
        self._freed()

    def settled(self, *, committing: bool) -> None:
        """A run is over for good (``committing``: it had reached :meth:`body_done`)."""
        self.running -= 1
        if committing:
            self.committing -= 1
        if self.running == 0:
            self._idle.set()
        self._freed()

    async def wait_idle(self) -> None:
        """Wait until no run is left."""
        if self.running:
            await self._idle.wait()

    def _freed(self) -> None:
        if self.starved:
            self.starved = False
            self._on_freed()


__all__ = ["Slots"]
