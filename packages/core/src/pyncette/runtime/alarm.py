"""How the scheduler loop sleeps until its next piece of work, and how others wake it sooner."""

from __future__ import annotations

from datetime import datetime

import anyio

from ..clock import Clock, Hold


class Alarm:
    """The loop's sleep: until a deadline, cut short by :meth:`ring`."""

    def __init__(self, clock: Clock, owner: object) -> None:
        self._clock = clock
        self._owner = owner
        self._scope: anyio.CancelScope | None = None
        self._rang_early = False  # rung while not asleep: the next sleep returns at once
        self._woken: Hold | None = None
        #: When the loop will wake up, while it sleeps.
        self.deadline: datetime | None = None

    async def sleep_until(self, deadline: datetime) -> None:
        """Sleep (the caller holds the clock, as :meth:`Clock.sleep` requires) until ``deadline`` or a ring."""
        with anyio.CancelScope() as scope:
            self._scope, self.deadline = scope, deadline
            if self._rang_early:
                scope.cancel()
            await self._clock.sleep((deadline - self._clock.now()).total_seconds())
        self._scope = self.deadline = None
        self._rang_early = False
        if self._woken is not None:
            woken, self._woken = self._woken, None
            woken.release()

    def ring(self) -> None:
        """Wake the loop now (or make its next sleep return at once, if it is not sleeping)."""
        scope = self._scope
        if scope is None:
            self._rang_early = True
        elif not scope.cancel_called:
            # Busy from this moment on, so that a virtual clock cannot move before the loop runs.
            self._woken = self._clock.hold("scheduler loop, woken", self._owner)
            scope.cancel()


__all__ = ["Alarm"]
