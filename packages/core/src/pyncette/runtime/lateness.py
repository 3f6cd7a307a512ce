"""Late runs: what a run claimed after its time does under ``catchup_window=`` and ``coalesce=``.

A run is late when the app was down (or busy) past its scheduled time. With the defaults every missed run
is made, one after the other (Pyncette 1.x). A catch-up window skips the runs older than ``now - window``;
coalescing makes one run of several missed ones. Skipped runs are counted (up to
:data:`~pyncette.events.MAX_COUNTED`) and reported as :class:`~pyncette.events.Missed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..events import MAX_COUNTED
from ..policies import Policies
from ..schedule import IntervalSchedule, Schedule

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Plan:
    """What to do with a late run: make the run scheduled at ``run_at`` now, or (``run_at is None``) make
    none and reschedule to ``next_at`` (``None``: no run is left, delete the record). ``missed`` runs, the
    first scheduled at ``first_missed``, are not made."""

    run_at: datetime | None
    next_at: datetime | None
    missed: int = 0
    first_missed: datetime | None = None


def plan(schedule: Schedule, policies: Policies, nominal: datetime, now: datetime) -> Plan:
    """The plan for the run scheduled at ``nominal`` (due: ``nominal <= now``), claimed at ``now``."""
    earliest: datetime | None = nominal
    missed = 0
    window = policies.catchup_window
    if window is not None and nominal < now - window:
        # The first run due at or after the window's start, on the task's own grid (an interval counts from
        # its first run, not from an arbitrary instant).
        earliest = schedule.fast_forward(nominal, now - window - _TICK)
        missed = count(schedule, nominal, earliest)
    if earliest is None or earliest > now:
        return Plan(None, earliest, missed, nominal if missed else None)
    chosen = earliest
    if policies.coalesce == "latest":
        chosen = latest_until(schedule, earliest, now)
        missed += count(schedule, earliest, chosen)
    return Plan(chosen, None, missed, nominal if missed else None)


def following(schedule: Schedule, policies: Policies, ran: datetime, now: datetime) -> datetime | None:
    """The nominal time of the run after the one scheduled at ``ran``: the next one, or with coalescing the
    first after ``now`` (the runs in between are coalesced into the one just made)."""
    if policies.coalesce == "all":
        return schedule.next_after(ran)
    return schedule.fast_forward(ran, now)


def count(schedule: Schedule, start: datetime, end: datetime | None) -> int:
    """How many runs are scheduled in ``[start, end)`` (``end`` ``None``: after ``start`` at all), counting
    at most :data:`MAX_COUNTED`."""
    if isinstance(schedule, IntervalSchedule) and end is not None:
        return min(MAX_COUNTED, max(0, -((start - end) // schedule.interval)))
    total = 0
    moment: datetime | None = start
    while moment is not None and (end is None or moment < end) and total < MAX_COUNTED:
        total += 1
        moment = schedule.next_after(moment)
    return total


def latest_until(schedule: Schedule, start: datetime, now: datetime) -> datetime:
    """The last run scheduled in ``[start, now]`` (``start`` is one, and is ``<= now``)."""
    if isinstance(schedule, IntervalSchedule):
        return start + ((now - start) // schedule.interval) * schedule.interval
    # Look back from now in doubling steps, so that a long gap (a seconds-cron after days of downtime)
    # costs a few dozen schedule steps, not one per missed run.
    step = timedelta(seconds=1)
    while True:
        probe = max(now - step, start - _TICK)
        found = schedule.next_after(probe)
        if found is not None and found <= now:
            while (later := schedule.next_after(found)) is not None and later <= now:
                found = later
            return found
        if probe <= start - _TICK:
            return start
        step *= 2


__all__ = ["Plan", "count", "following", "latest_until", "plan"]
