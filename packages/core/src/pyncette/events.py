"""Typed events of the runs of an app: subscribe with ``app.on(EventType, listener)``.

Listeners are plain functions called synchronously, in the order they were added, from the process that
handles the run; they should be quick (hand slow work to a queue). A listener that raises is logged with
its traceback and never affects the run or other listeners. ``app.on(Event, ...)`` receives every event.

Example::

    @app.on(pyncette.events.Failed)
    def alert(event: pyncette.events.Failed) -> None:
        print(f"{event.task} failed (attempt {event.attempt}): {event.error}")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .errors import ConfigurationError
from .redaction import get_logger

logger = get_logger("pyncette")


@dataclass(frozen=True)
class Event:
    """What every event has.

    Attributes:
        task: the task (an instance for dynamic tasks).
        scheduled_at: the scheduled time of the run concerned, as the schedule gives it (aware UTC).
        at: when it happened, on the app's clock.
    """

    task: Any
    scheduled_at: datetime
    at: datetime


@dataclass(frozen=True)
class Scheduled(Event):
    """An instance was registered by ``schedule_task``/``schedule_tasks`` in this process; ``scheduled_at``
    is its first run."""


@dataclass(frozen=True)
class Started(Event):
    """A run's body is starting; ``attempt`` counts from 1."""

    attempt: int


@dataclass(frozen=True)
class Succeeded(Event):
    """A run's body returned."""

    attempt: int
    duration: timedelta


@dataclass(frozen=True)
class Failed(Event):
    """A run's body raised (or timed out: then a :class:`TimedOut` came first)."""

    attempt: int
    error: BaseException


@dataclass(frozen=True)
class TimedOut(Event):
    """A run's body was cancelled after ``timeout``."""

    attempt: int
    timeout: timedelta


@dataclass(frozen=True)
class Retrying(Event):
    """A failed run will be tried again at ``retry_at`` (try number ``attempt + 1``)."""

    attempt: int
    error: BaseException
    retry_at: datetime


@dataclass(frozen=True)
class Exhausted(Event):
    """A failed run will not be tried again: ``action`` is ``"skip"`` (to the next scheduled run) or
    ``"delete"`` (the record)."""

    attempt: int
    error: BaseException
    action: str


@dataclass(frozen=True)
class Missed(Event):
    """Runs later than the catch-up window (or coalesced into another) were not made.

    ``count`` of them, the first scheduled at ``scheduled_at``; counting stops at
    :data:`MAX_COUNTED`, so a larger number means "at least that many".
    """

    count: int


@dataclass(frozen=True)
class SkippedOverlap(Event):
    """``count`` runs came due while the previous run still ran and were skipped (``overlap="skip"``)."""

    count: int


@dataclass(frozen=True)
class LeaseLost(Event):
    """A running body's lease was lost (taken over after it expired): its outcome is not stored."""


#: Where counting missed or skipped runs stops.
MAX_COUNTED = 10_000

E = TypeVar("E", bound=Event)
Listener = Callable[[Any], None]


class Listeners:
    """The listeners of an app, by event type. Cheap to ask whether anyone listens (the hot path does)."""

    def __init__(self, pairs: Iterable[tuple[type[Event], Listener]] = ()) -> None:
        self._by_type: dict[type[Event], list[Listener]] = {}
        for kind, listener in pairs:
            self._by_type.setdefault(kind, []).append(listener)
        self._any = self._by_type.get(Event, [])

    def wants(self, kind: type[Event]) -> bool:
        """Whether an event of ``kind`` has listeners (build the event only then)."""
        return bool(self._any) or kind in self._by_type

    def emit(self, event: Event) -> None:
        """Call the listeners of ``event``'s type, then those of every event; log and swallow their errors."""
        for listener in (*self._by_type.get(type(event), ()), *self._any):
            try:
                listener(event)
            except Exception:
                logger.exception("Event listener %r failed on %s", listener, type(event).__name__)


def check_event_type(kind: object) -> type[Event]:
    """``kind`` if it is an event type of this module; a clear error otherwise."""
    if isinstance(kind, type) and issubclass(kind, Event):
        return kind
    known = ", ".join(t.__name__ for t in EVENT_TYPES)
    raise ConfigurationError(f"invalid event type {kind!r}: must be pyncette.events.Event or one of {known}")


EVENT_TYPES: tuple[type[Event], ...] = (
    Scheduled,
    Started,
    Succeeded,
    Failed,
    TimedOut,
    Retrying,
    Exhausted,
    Missed,
    SkippedOverlap,
    LeaseLost,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_COUNTED",
    "Event",
    "Exhausted",
    "Failed",
    "LeaseLost",
    "Listener",
    "Listeners",
    "Missed",
    "Retrying",
    "Scheduled",
    "SkippedOverlap",
    "Started",
    "Succeeded",
    "TimedOut",
    "check_event_type",
]
