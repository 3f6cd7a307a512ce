"""The retry policy for storage calls.

* :class:`~pyncette.errors.BackendError` means storage is unavailable for now: the call is logged and
  retried with capped exponential backoff, for as long as it takes (:func:`retrying`).
* Anything else (a bug in the backend, or a value storage refuses) is not a storage outage: it is
  logged at ERROR with its traceback and never retried in a tight loop.

The scheduler loop backs off per piece of work (:class:`Backoff`), so that one failing parent never
holds up the others; the committer retries its calls (:func:`retrying`), since runs wait for them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from ..clock import Clock
from ..errors import BackendError
from ..redaction import get_logger

T = TypeVar("T")

logger = get_logger("pyncette")

#: The longest wait between two attempts of a storage call that failed with BackendError.
MAX_BACKOFF = 30.0
#: The shortest wait between two attempts, however close a deadline (see :func:`retrying`).
MIN_BACKOFF = 0.1
#: The longest a piece of work is kept away after a call about it raised something unexpected.
MAX_FAULT_BACKOFF = timedelta(minutes=5)


async def retrying(
    clock: Clock,
    what: str,
    call: Callable[[], Awaitable[T]],
    pause: Callable[[float], Awaitable[None]] | None = None,
    *,
    deadlines: Sequence[datetime] = (),
) -> T:
    """Call storage until it succeeds, backing off while it raises :class:`BackendError`.

    Other exceptions propagate at once. The caller holds the clock: the backoff sleeps on it, or
    through ``pause(seconds)`` when given (which may raise to stop retrying). ``deadlines`` are the lease
    expiries of what the call stores (past one, the call may come too late for that record): a wait is at
    most half the time left until the next of them, and at least :data:`MIN_BACKOFF`, so that a short run
    of transient faults does not outlast a lease.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except BackendError as exc:
            attempt += 1
            delay = min(MAX_BACKOFF, 0.1 * math.pow(2, min(attempt, 20)))
            now = clock.now()
            upcoming = [deadline for deadline in deadlines if deadline > now]
            if upcoming:
                delay = min(delay, max(MIN_BACKOFF, (min(upcoming) - now).total_seconds() / 2))
            logger.warning("Storage call %r failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc)
            await (pause or clock.sleep)(delay)


class Backoff:
    """Work whose storage calls failed, and until when to leave it be.

    A :class:`BackendError` (storage unavailable) is logged as a warning and the work is tried again after
    a short, doubling pause (at most :data:`MAX_BACKOFF`). Anything else (a bug in the backend, or a value it
    refuses) is logged at ERROR with its traceback, and the work is kept away for a longer doubling while
    (from ``first_fault_backoff`` up to :data:`MAX_FAULT_BACKOFF`), never retried in a tight loop. Either
    way only that work waits: the rest goes on.
    """

    def __init__(self, clock: Clock, first_fault_backoff: timedelta) -> None:
        self._clock = clock
        self._first_fault = first_fault_backoff
        self._failures: dict[str, tuple[int, datetime]] = {}

    def blocked_until(self, key: str) -> datetime | None:
        """When ``key`` may be tried again, if that is still in the future."""
        found = self._failures.get(key)
        if found is None or found[1] <= self._clock.now():
            return None
        return found[1]

    def failed(self, key: str, what: str, exc: Exception) -> datetime:
        """Log the failure and keep ``key`` away for twice as long as the last time; returns until when."""
        count = self._failures.get(key, (0, self._clock.now()))[0] + 1
        if isinstance(exc, BackendError):
            pause = timedelta(seconds=min(MAX_BACKOFF, 0.1 * math.pow(2, min(count, 20))))
            logger.warning(
                "Storage call %r for %s failed (attempt %d), retrying in %.1fs: %s",
                what,
                key,
                count,
                pause.total_seconds(),
                exc,
            )
        else:
            pause = min(self._first_fault * 2 ** min(count - 1, 20), MAX_FAULT_BACKOFF)
            logger.error(
                "Storage call %r for %s raised %s (failure %d): not a storage outage but a bug in the backend or "
                "a value it refuses; trying again in %.0fs, other work goes on",
                what,
                key,
                type(exc).__name__,
                count,
                pause.total_seconds(),
                exc_info=exc,
            )
        until = self._clock.now() + pause
        self._failures[key] = (count, until)
        return until

    def succeeded(self, key: str) -> None:
        """``key`` works again."""
        self._failures.pop(key, None)


__all__ = ["Backoff", "retrying"]
