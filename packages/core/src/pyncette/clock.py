"""The one place the runtime reads time and waits.

:class:`SystemClock` is real time. :class:`pyncette.testing.VirtualClock`
replaces it in tests. Tasks that wait should use :func:`pyncette.sleep`,
which sleeps on the clock of the app running them, so virtual time applies to
them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime, timezone

import anyio


class Clock:
    """Real time. Subclasses replace :meth:`now` and :meth:`sleep` consistently."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable)."""
        await anyio.sleep(max(seconds, 0.0))

    def hold(self) -> None:
        """Mark one unit of work in progress; a virtual clock does not move while any is held.

        Whoever calls :meth:`sleep` must hold one unit: sleeping releases it and waking takes it back.
        """

    def release(self) -> None:
        """Undo one :meth:`hold`."""

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Hold one unit of work for the duration of the block."""
        self.hold()
        try:
            yield
        finally:
            self.release()


SystemClock = Clock

_REAL_TIME = Clock()
_current: ContextVar[Clock | None] = ContextVar("pyncette_clock", default=None)


def current_clock() -> Clock:
    """The clock of the app whose task is running (real time outside any app)."""
    return _current.get() or _REAL_TIME


def set_current_clock(clock: Clock) -> None:
    """Make ``clock`` the clock of the current context (the runtime does this for its tasks)."""
    _current.set(clock)


async def sleep(seconds: float) -> None:
    """Sleep on the running app's clock: real time in production, virtual time in tests."""
    await current_clock().sleep(seconds)


__all__ = ["Clock", "SystemClock", "current_clock", "set_current_clock", "sleep"]
