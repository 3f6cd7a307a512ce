"""What this process knows is coming: when each static task is due next and which dynamic runs are near."""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta

from ..task import StaticTask, Task
from .alarm import Alarm

#: A static run is claimed at most this long before it is due (the worker then waits for the due time).
MAX_CLAIM_LEAD = timedelta(milliseconds=50)
#: How many upcoming dynamic runs this process remembers to wake for (beyond that, polling finds them).
MAX_HINTS = 10_000


class Agenda:
    """Due times learnt from this process's own registrations and commits, so the loop wakes for them
    instead of polling storage every ``poll_interval``."""

    def __init__(self, alarm: Alarm, static_tasks: int) -> None:
        self._alarm = alarm
        self._static_tasks = static_tasks
        #: Static task name -> its next due time (``None``: unknown, ask storage).
        self.static_due: dict[str, datetime | None] = {}
        #: Static tasks running here -> their lease expiry: not claimed again until it passes (or, once the
        #: run's outcome is with the committer, until it is stored: see :meth:`InFlight.submit`).
        self.static_running: dict[str, datetime] = {}
        #: Static task name -> when storage was last asked about it.
        self.static_looked: dict[str, datetime] = {}
        self._hints: list[datetime] = []  # a heap of upcoming dynamic runs
        # How long a slow static claim takes (on the app's clock); zero on a virtual clock.
        self._claim_latency = timedelta(0)

    def planned(self, task: Task, next_at: datetime | None) -> None:
        """Note a registered or committed next run; wake the loop if it is due before the loop would wake."""
        if isinstance(task, StaticTask):
            self.static_due[task.name] = next_at
            if next_at is None:
                return
            wake_at = next_at - self.claim_lead()
        elif next_at is None:
            return
        else:
            if len(self._hints) < MAX_HINTS:
                heapq.heappush(self._hints, next_at)
            wake_at = next_at
        deadline = self._alarm.deadline
        if deadline is not None and wake_at < deadline:
            self._alarm.ring()

    def hinted(self, due: datetime) -> None:
        """Note a hint from another process (:meth:`Repository.wakeups`) that work is due at ``due``."""
        if len(self._hints) < MAX_HINTS:
            heapq.heappush(self._hints, due)
        deadline = self._alarm.deadline
        # Not asleep: the tick in progress may already have chosen when to wake; the ring makes it look again.
        if deadline is None or due < deadline:
            self._alarm.ring()

    def forget_dynamic(self, now: datetime) -> None:
        """Forget the upcoming dynamic runs due by ``now`` (the tick starting at ``now`` claims them)."""
        hints = self._hints
        while hints and hints[0] <= now:
            heapq.heappop(hints)

    def next_dynamic(self) -> datetime | None:
        """The earliest upcoming dynamic run this process knows of (noted since the last :meth:`forget_dynamic`)."""
        return self._hints[0] if self._hints else None

    def measured(self, claim_took: timedelta) -> None:
        """Record a static claim's round trip: a slowly decaying peak, so the lead covers slow claims too."""
        self._claim_latency = max(claim_took, self._claim_latency * 0.9)

    def probe_interval(self, poll_interval: timedelta) -> timedelta:
        """How often a static task that is not due is looked at (for runs triggered elsewhere): every poll
        interval, or less often when claims are slow, so that looking costs at most a tenth of the loop's time."""
        return max(poll_interval, 10 * self._claim_latency)

    def claim_lead(self) -> timedelta:
        """How far ahead of its due time a static run is claimed: two slow claims per static task (those due
        together are claimed one after another, so each needs the time of all of them)."""
        return min(2 * self._claim_latency * self._static_tasks, MAX_CLAIM_LEAD)


__all__ = ["Agenda"]
