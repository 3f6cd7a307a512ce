"""The runs in flight: counted from their claim, their leases kept, their outcomes stored, then settled."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ..abc import PARKED_AT, Completion, Lease, Record, Repository
from ..clock import Clock
from ..errors import LeaseLostException
from ..model import AppContext
from ..redaction import get_logger
from ..runstate import RunState
from ..task import Instance, StaticTask
from .agenda import Agenda
from .committer import Committer, Pending
from .description import AppDescription
from .run import Run
from .slots import Slots

logger = get_logger("pyncette")


class InFlight:
    """The runs this process has claimed and not yet settled.

    A claimed run takes a slot and a clock hold. Its outcome goes to the committer together with the hold
    (the slot then counts it as committing, so the next claim can overlap the commit); once the outcome is
    stored, the agenda learns the next due time and the run is settled: its slot frees and its hold is
    released. A run that ends without an outcome to store is settled at once.
    """

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
    ) -> None:
        self._app_context = app_context
        self._description = description
        self._repository = repository
        self._clock = clock
        self._committer = committer
        self._agenda = agenda
        self._slots = slots
        #: The runs claimed and not yet settled, for reports at shutdown.
        self.runs: set[Run] = set()
        self._extend = self.extend  # one bound method shared by every run (not one more object per run)

    def claimed(self, task: StaticTask | Instance, record: Record) -> Run:
        """A freshly claimed run, counted as work in progress from now on."""
        assert record.locked_by is not None
        run = Run(task, record, self._clock.hold(task.name, self._app_context), self._extend)
        self._slots.taken()
        self.runs.add(run)
        return run

    async def extend(self, run: Run) -> None:
        """A heartbeat of ``run``: extend its lease by the task's lease duration."""
        task = run.task
        if not await self._repository.extend(run.lease, lease_until=self._clock.now() + task.lease_duration):
            run.lost = True
            raise LeaseLostException(task)

    # -- outcomes -------------------------------------------------------------------------------------

    def commit(self, run: Run, next_at: datetime | None, state: RunState) -> None:
        """Hand the outcome to the committer: reschedule to the nominal time ``next_at`` (with its jitter
        offset) or delete the record, storing ``state``."""
        if next_at is None:
            self.submit(run, run.completion(None))
            return
        self.submit(run, run.completion(*self.stored_form(run, next_at, state)))

    def stored_form(self, run: Run, next_at: datetime | None, state: RunState) -> tuple[datetime | None, str | None]:
        """The stored due time of the nominal ``next_at`` and the state text to store with it (none when the
        record is deleted)."""
        if next_at is None:
            return None, None
        state = self.counted(run, state)
        offset = run.task.policies.offset(run.record.parent, run.record.name, next_at)
        if offset and next_at < PARKED_AT - offset:
            return next_at + offset, replace(state, nominal=next_at).encode()
        return next_at, state.encode()

    @staticmethod
    def counted(run: Run, state: RunState) -> RunState:
        """``state`` with the history's run counter moved past this run (unchanged without history)."""
        return state if run.counted is None else replace(state, runs=run.counted + 1)

    def submit(self, run: Run, change: Completion | Lease) -> None:
        """Hand ``change`` (an outcome to store, or the lease to let go of) to the committer. It settles the run
        once that is stored; the slot stays taken until then, but the worker moves on."""
        run.committing = True
        if isinstance(run.task, StaticTask):
            # This process knows the run's outcome: it does not claim the task again, even once the lease has
            # expired, before the outcome is stored (a commit held up by storage faults would else run it twice).
            self._agenda.static_running[run.task.name] = PARKED_AT
        self._slots.body_done()
        self._committer.submit(Pending(change, run.record.locked_until, owner=run), run.give_hold())

    async def store_first(self, run: Run, next_at: datetime | None, state: str | None, *, release: bool) -> bool:
        """Commit a run before its body starts (at-most-once, triggered) and wait until it is stored; ``False``
        (and nothing is to run) when the lease was lost meanwhile."""
        task = run.task
        change = run.completion(next_at, state, release=release)
        stored, run.hold = await self._committer.finish(change, run.record.locked_until, run.give_hold())
        if not stored:
            logger.warning("Not running %r: its lease was lost before it started", task)
            return False
        if release:
            self._agenda.planned(task, next_at)
            if isinstance(task, StaticTask):
                # Already rescheduled: the next run may start on time even while this one still runs.
                self._agenda.static_running.pop(task.name, None)
        return True

    # -- settling -------------------------------------------------------------------------------------

    def stored(self, item: Pending, ok: bool) -> None:
        """The committer stored (``ok``) or could not store the outcome of a run."""
        run = item.owner
        if not isinstance(run, Run):
            if not ok:
                logger.warning("Could not park record %s/%s (its lease was lost)", item.change.parent, item.change.name)
            return
        task = run.task
        change = item.change
        if not isinstance(change, Completion):  # an unlock
            if isinstance(task, StaticTask):
                self._agenda.static_due[task.name] = self._clock.now() + self._description.poll_interval
        elif ok:
            self._agenda.planned(task, change.next_at)
        else:
            logger.warning("Task %r ran but its lease had been lost; its result was not committed", task)
        self.settle(run)

    def settle(self, run: Run) -> None:
        """The run is over for good: free its slot and release its hold."""
        self.runs.discard(run)
        if isinstance(run.task, StaticTask):
            self._agenda.static_running.pop(run.task.name, None)
        self._slots.settled(committing=run.committing)
        if run.hold is not None:
            run.give_hold().release()


__all__ = ["InFlight"]
