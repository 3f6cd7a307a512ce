"""Testing helpers: a virtual clock that runs hours of schedules in milliseconds.

Example::

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(timedelta(hours=1))
    # every run due within that hour has happened, in order

Time only moves when the test calls :meth:`VirtualClock.advance`. Before each
step the clock waits until nothing is busy: the scheduler loop is asleep and
every task it started has finished or is itself asleep on the clock (through
:func:`pyncette.sleep`). Real I/O (a Redis or PostgreSQL round trip) happens
in real time in between, so the same tests run against real servers.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .abc import Repository
from .clock import Clock, Hold

if TYPE_CHECKING:
    from .runtime import PyncetteContext

DEFAULT_START = datetime(2030, 1, 1, tzinfo=timezone.utc)


class VirtualClock(Clock):
    """A clock that stands still until :meth:`advance` moves it."""

    def __init__(self, start: datetime = DEFAULT_START, *, settle_timeout: float = 60.0) -> None:
        if start.tzinfo is None:
            raise ValueError(f"VirtualClock start must be timezone-aware, got {start!r}")
        self._now = start.astimezone(timezone.utc)
        self.settle_timeout = settle_timeout
        self._sleepers: list[tuple[datetime, int, anyio.Event]] = []
        self._sequence = itertools.count()
        self._busy = 0
        self._holds: dict[int, Hold] = {}
        self._idle = anyio.Event()
        self._idle.set()

    def now(self) -> datetime:
        return self._now

    def hold(self, label: str, owner: object = None) -> Hold:
        hold = Hold(self, label, owner)
        self._holds[id(hold)] = hold
        self._take()
        return hold

    def _released(self, hold: Hold) -> None:
        del self._holds[id(hold)]
        self._give()

    def outstanding(self, owner: object = None) -> list[str]:
        """Labels of the holds taken and not yet released (of ``owner`` only, when given)."""
        return sorted(h.label for h in self._holds.values() if owner is None or h.owner is owner)

    def _take(self) -> None:
        self._busy += 1
        if self._busy == 1:
            self._idle = anyio.Event()

    def _give(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    async def sleep(self, seconds: float) -> None:
        wake = anyio.Event()
        entry = (self._now + timedelta(seconds=max(seconds, 0.0)), next(self._sequence), wake)
        heapq.heappush(self._sleepers, entry)
        # A sleeper is not busy: its unit of work is lent back until advance() wakes it.
        self._give()
        try:
            await wake.wait()
        except BaseException:
            if not wake.is_set():
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)
                self._take()
            raise

    async def settle(self) -> None:
        """Wait until no work is in progress.

        Raises :class:`TimeoutError` when work never stops for ``settle_timeout`` seconds of real
        time (for example a backend that keeps handing out the same due work).
        """
        # Give freshly started tasks a chance to mark themselves busy first.
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        try:
            with anyio.fail_after(self.settle_timeout):
                while self._busy > 0:
                    await self._idle.wait()
                    for _ in range(3):
                        await anyio.lowlevel.checkpoint()
        except TimeoutError:
            raise TimeoutError(
                f"virtual clock at {self._now.isoformat()}: work did not stop within {self.settle_timeout} s "
                f"of real time; still held: {self.outstanding() or 'nothing by Pyncette'} ({self._busy} unit(s) busy)"
            ) from None

    async def advance(self, delta: timedelta | float) -> None:
        """Move time forward by ``delta``, waking every sleeper due on the way, in order."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        await self.advance_to(self._now + step)

    async def advance_to(self, target: datetime) -> None:
        """Move time forward to ``target`` (aware), waking every sleeper due on the way, in order."""
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline = self._sleepers[0][0]
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, wake = heapq.heappop(self._sleepers)
                self._take()  # the sleeper's unit of work, back from the moment it is woken
                wake.set()
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()


@contextlib.asynccontextmanager
async def running(ctx: PyncetteContext) -> AsyncIterator[PyncetteContext]:
    """Run ``ctx.run()`` in the background for the duration of the block, then shut it down gracefully.

    On a :class:`VirtualClock`, a clock hold the runtime took and never released is an error here.
    """
    async with anyio.create_task_group() as tg:
        await tg.start(ctx.run)
        try:
            yield ctx
        finally:
            ctx.shutdown()
    clock = ctx.clock
    if isinstance(clock, VirtualClock) and clock.outstanding(ctx):
        raise AssertionError(f"clock holds never released after the app stopped: {clock.outstanding(ctx)}")


def shared_repository(repository: Repository) -> Callable[..., AbstractAsyncContextManager[Repository]]:
    """A ``repository_factory`` for :class:`~pyncette.Pyncette` that hands every app the same open
    ``repository`` (and never closes it): several apps, as several processes would, on one store, or an app
    on a repository the test wraps to observe or break it."""

    @contextlib.asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[Repository]:
        yield repository

    return factory


__all__ = ["VirtualClock", "running", "shared_repository"]
