"""One run of one task, from the claimed record to the stored outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..abc import PARKED_AT, Lease, Record, Repository
from ..clock import Clock, Hold
from ..errors import LeaseLostException
from ..model import AppContext, Context
from ..modes import ExecutionMode, FailureMode
from ..redaction import get_logger
from ..task import Instance, StaticTask
from .agenda import Agenda
from .committer import Committer, Pending
from .description import AppDescription
from .slots import Slots

logger = get_logger("pyncette")


@dataclass(eq=False, slots=True)
class Run:
    """A claimed record and the task it runs, with the clock hold that counts it as work in progress."""

    task: StaticTask | Instance
    record: Record
    hold: Hold | None
    lease: Lease
    #: The body is over and the outcome is with the committer.
    committing: bool = False

    def give_hold(self) -> Hold:
        """Hand the hold over (to the committer); the run holds nothing afterwards."""
        hold, self.hold = self.hold, None
        assert hold is not None
        return hold

    def __repr__(self) -> str:
        return f"<run of {self.task!r} due {self.record.scheduled_at.isoformat()}>"


class Runner:
    """Executes runs (``execute``) and settles them once their outcome is stored (``stored``)."""

    def __init__(
        self,
        *,
        app_context: AppContext,
        description: AppDescription,
        repository: Repository,
        clock: Clock,
        committer: Committer,
        agenda: Agenda,
        slots: Slots,
        values: dict[str, Any],
    ) -> None:
        self._app_context = app_context
        self._description = description
        self._repository = repository
        self._clock = clock
        self._committer = committer
        self._agenda = agenda
        self._slots = slots
        self._values = values
        #: Runs claimed and not yet settled, for reports at shutdown.
        self.in_flight: set[Run] = set()

    # -- running --------------------------------------------------------------------------------------

    def claimed(self, task: StaticTask | Instance, record: Record) -> Run:
        """A freshly claimed run, counted as work in progress from now on."""
        assert record.locked_by is not None
        lease = Lease(record.parent, record.name, record.locked_by)
        run = Run(task, record, self._clock.hold(task.name, self._app_context), lease)
        self._slots.taken()
        self.in_flight.add(run)
        return run

    async def execute(self, run: Run) -> None:
        """Run the task, then hand its outcome to the committer; the run is settled whatever happens."""
        try:
            early = (run.record.scheduled_at - self._clock.now()).total_seconds()
            if early > 0:  # a static run claimed ahead of its due time
                await self._clock.sleep(early)
            if run.task.execution_mode is ExecutionMode.AT_MOST_ONCE:
                await self._at_most_once(run)
            else:
                await self._at_least_once(run)
        finally:
            if not run.committing:
                self._settle(run)

    async def _at_least_once(self, run: Run) -> None:
        task = run.task
        lost = False

        async def heartbeat() -> None:
            nonlocal lost
            if not await self._repository.extend(run.lease, lease_until=self._clock.now() + task.lease_duration):
                lost = True
                raise LeaseLostException(task)

        unlock = False
        try:
            await self._invoke(self._context(run, heartbeat))
        except LeaseLostException:
            logger.warning("Task %r lost its lease; neither committing nor unlocking", task)
            return
        except Exception:
            logger.exception("Task %r failed", task)
            if lost or task.failure_mode is FailureMode.NONE:
                return
            unlock = task.failure_mode is FailureMode.UNLOCK
        if lost:
            logger.warning("Task %r lost its lease while running; not committing", task)
            return
        next_at = None if unlock else self.next_run(task, run.record.scheduled_at)
        # The committer settles the run once its outcome is stored; the slot stays taken until then, but
        # this worker moves on.
        run.committing = True
        self._slots.body_done()
        pending = Pending(run.lease, next_at, run.record.locked_until, unlock, owner=run)
        self._committer.submit(pending, run.give_hold())

    async def _at_most_once(self, run: Run) -> None:
        task = run.task
        next_at = self.next_run(task, run.record.scheduled_at)
        stored, run.hold = await self._committer.finish(run.lease, next_at, run.record.locked_until, run.give_hold())
        if not stored:
            logger.warning("Not running %r: its lease was lost before it started", task)
            return
        self._agenda.planned(task, next_at)
        if isinstance(task, StaticTask):
            # Already rescheduled: the next run may start on time even while this one still runs.
            self._agenda.static_running.pop(task.name, None)

        async def no_heartbeat() -> None:
            return None

        try:
            await self._invoke(self._context(run, no_heartbeat))
        except Exception:
            logger.exception("Task %r failed (at-most-once: not retried)", task)

    def _context(self, run: Run, heartbeat: Callable[[], Any]) -> Context:
        task = run.task
        return Context(
            app_context=self._app_context,
            task=task,
            scheduled_at=run.record.scheduled_at.astimezone(task.tz),
            args=task.extra_args,
            _heartbeat=heartbeat,
            **self._values,
        )

    async def _invoke(self, context: Context) -> None:
        middlewares = self._description.middlewares
        if not middlewares:
            await context.task.func(context)
            return

        async def call(index: int) -> None:
            if index == len(middlewares):
                await context.task.func(context)
            else:
                await middlewares[index](context, lambda: call(index + 1))

        await call(0)

    def next_run(self, task: StaticTask | Instance, scheduled_at: datetime) -> datetime | None:
        """The run after the one scheduled at ``scheduled_at``; past year 9999 the task is parked there."""
        assert task.schedule is not None
        try:
            if task.fast_forward:
                following = task.schedule.fast_forward(scheduled_at, self._clock.now())
            else:
                following = task.schedule.next_after(scheduled_at)
        except (OverflowError, ValueError):
            following = PARKED_AT
        if following is not None and following >= PARKED_AT:
            logger.warning("Task %r has no run left before 9999-12-31; parking it there", task)
            return PARKED_AT
        return following

    # -- settling -------------------------------------------------------------------------------------

    def stored(self, item: Pending, ok: bool) -> None:
        """The committer stored (``ok``) or could not store the outcome of a run."""
        run = item.owner
        if not isinstance(run, Run):
            if not ok:
                logger.warning("Could not park record %s/%s (its lease was lost)", item.lease.parent, item.lease.name)
            return
        task = run.task
        if item.unlock:
            if isinstance(task, StaticTask):
                self._agenda.static_due[task.name] = self._clock.now() + self._description.poll_interval
        elif ok:
            self._agenda.planned(task, item.next_at)
        else:
            logger.warning("Task %r ran but its lease had been lost; its result was not committed", task)
        self._settle(run)

    def _settle(self, run: Run) -> None:
        self.in_flight.discard(run)
        if isinstance(run.task, StaticTask):
            self._agenda.static_running.pop(run.task.name, None)
        self._slots.settled(committing=run.committing)
        if run.hold is not None:
            run.give_hold().release()


__all__ = ["Run", "Runner"]
