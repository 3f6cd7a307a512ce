"""When a run's next run is: the schedule under the catch-up, coalescing and overlap policies, with the runs
left out reported."""

from __future__ import annotations

from datetime import datetime

from .. import events
from ..abc import PARKED_AT
from ..events import Listeners
from ..redaction import get_logger
from ..schedule import Schedule
from ..task import Instance, StaticTask
from . import lateness

logger = get_logger("pyncette")


class Timing:
    """Works out next runs and late runs for the runner, logging and emitting the runs it leaves out
    (:class:`~pyncette.events.Missed`, :class:`~pyncette.events.SkippedOverlap`)."""

    def __init__(self, listeners: Listeners) -> None:
        self._listeners = listeners

    def late(self, task: StaticTask | Instance, nominal: datetime, now: datetime) -> lateness.Plan:
        """The catch-up plan of the run scheduled at ``nominal``, claimed at ``now``; the runs it misses are
        reported."""
        assert task.schedule is not None
        plan = lateness.plan(task.schedule, task.policies, nominal, now)
        if plan.missed:
            assert plan.first_missed is not None
            self.missed(task, plan.first_missed, now, plan.missed)
        return plan

    def following(
        self, task: StaticTask | Instance, nominal: datetime, now: datetime, *, skip_overlap: bool = True
    ) -> datetime | None:
        """The nominal time of the run after the one scheduled at ``nominal``; with ``overlap="skip"``, the
        runs that came due while it ran are skipped. Past year 9999 the task is parked there."""
        schedule = task.schedule
        assert schedule is not None
        policies = task.policies
        try:
            if policies.plain:
                following = schedule.next_after(nominal)
            else:
                following = self._with_policies(task, schedule, nominal, now, skip_overlap)
        except (OverflowError, ValueError):
            following = PARKED_AT
        if following is not None and following >= PARKED_AT:
            logger.warning("Task %r has no run left before 9999-12-31; parking it there", task)
            return PARKED_AT
        return following

    def _with_policies(
        self, task: StaticTask | Instance, schedule: Schedule, nominal: datetime, now: datetime, skip_overlap: bool
    ) -> datetime | None:
        """:meth:`following` under coalescing and ``overlap="skip"``, reporting the runs left out."""
        policies = task.policies
        following = lateness.following(schedule, policies, nominal, now)
        if policies.coalesce != "all":
            natural = schedule.next_after(nominal)
            if natural is not None and following is not None and natural < following:
                self.missed(task, natural, now, lateness.count(schedule, natural, following))
        if skip_overlap and policies.overlap == "skip" and following is not None and following <= now:
            resumed = schedule.fast_forward(following, now)
            skipped = lateness.count(schedule, following, resumed)
            logger.info("Task %r skipped %d run(s) that came due while it ran", task, skipped)
            if self._listeners.wants(events.SkippedOverlap):
                self._listeners.emit(events.SkippedOverlap(task, following, now, skipped))
            following = resumed
        return following

    def missed(self, task: StaticTask | Instance, first: datetime, now: datetime, count: int) -> None:
        """Report ``count`` runs left out, the first scheduled at ``first``."""
        logger.info("Task %r missed %d run(s) from %s (catch-up policy)", task, count, first.isoformat())
        if self._listeners.wants(events.Missed):
            self._listeners.emit(events.Missed(task, first, now, count))


__all__ = ["Timing"]
