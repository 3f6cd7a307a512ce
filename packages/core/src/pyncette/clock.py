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


class Hold:
    """One unit of work in progress on a clock (see :meth:`Clock.hold`). Released exactly once.

    Holds are moved between the parts of the runtime (a run's hold goes from the loop that claimed it
    to the worker that runs it); whoever has it last releases it. Releasing twice is an error.
    """

    __slots__ = ("_clock", "_released", "label", "owner")

    def __init__(self, clock: Clock, label: str, owner: object = None) -> None:
        self._clock = clock
        self._released = False
        self.label = label
        self.owner = owner

    def release(self) -> None:
        """Mark the work done."""
        if self._released:
            raise RuntimeError(f"clock hold {self.label!r} released twice")
        self._released = True
        self._clock._released(self)

    def __repr__(self) -> str:
        return f"<Hold {self.label!r}{' released' if self._released else ''}>"


class Clock:
    """Real time. Subclasses replace :meth:`now`, :meth:`sleep` and the hold bookkeeping consistently."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable).

        Whoever sleeps must have work in progress (a :class:`Hold`): a virtual clock counts the
        sleeper as idle while it sleeps and as busy again once it wakes.
        """
        await anyio.sleep(max(seconds, 0.0))

    def hold(self, label: str, owner: object = None) -> Hold:
        """Mark one unit of work in progress until the returned hold is released; a virtual clock does not
        move while any is held. ``label`` names the work and ``owner`` whose it is (an app context), for
        reports of holds never released.

        Real time keeps no account (one shared hold that cannot run out is returned, as the hot path takes
        a hold per run); :class:`~pyncette.testing.VirtualClock` does, and refuses a second release."""
        return _NO_ACCOUNT

    def _released(self, hold: Hold) -> None:
        """Bookkeeping of :meth:`Hold.release` (nothing to do in real time)."""

    @contextlib.contextmanager
    def busy(self, label: str = "busy") -> Iterator[None]:
        """Hold one unit of work for the duration of the block."""
        hold = self.hold(label)
        try:
            yield
        finally:
            hold.release()


class _Unaccounted(Hold):
    """The hold of real time: nothing to account for, so it may be released any number of times."""

    __slots__ = ()

    def release(self) -> None:
        return None


SystemClock = Clock
_NO_ACCOUNT = _Unaccounted(Clock(), "real time")

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


__all__ = ["Clock", "Hold", "SystemClock", "current_clock", "set_current_clock", "sleep"]
