"""One run of one task, from the claimed record to the outcome handed to the committer.

The parts it uses, each in its own module: :class:`~pyncette.runtime.run.Run` (the claimed record),
:class:`~pyncette.runtime.body.Body` (the call of the task body), :class:`~pyncette.runtime.timing.Timing`
(next and late runs), :class:`~pyncette.runtime.failures.Failures` (what a failed run stores) and
:class:`~pyncette.runtime.inflight.InFlight` (outcomes to the committer, runs settled once stored).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from .. import events
from ..abc import Repository
from ..clock import Clock
from ..errors import LeaseLostException
from ..model import AppContext
from ..modes import ExecutionMode
from ..redaction import get_logger
from ..runstate import EMPTY, Outcome, RunState, bookkeeping, decode, summary
from ..schedule import OnceSchedule
from ..task import Instance, StaticTask
from . import history
from .body import Body
from .description import AppDescription
from .failures import Failures, outcome_of
from .inflight import InFlight
from .run import Run
from .timing import Timing

logger = get_logger("pyncette")


class Runner:
    """Executes claimed runs (``execute``): the body under the task's execution mode, then the outcome to
    :class:`~pyncette.runtime.inflight.InFlight`, which settles the run once it is stored."""

    def __init__(
        self,
        *,
        app_context: AppContext,
        description: AppDescription,
        repository: Repository,
        clock: Clock,
        in_flight: InFlight,
        values: dict[str, Any],
    ) -> None:
        self._app_context = app_context
        self._repository = repository
        self._clock = clock
        self._in_flight = in_flight
        self._listeners = listeners = description.listeners
        self._body = Body(app_context=app_context, description=description, clock=clock, values=values)
        self._timing = timing = Timing(listeners)
        self._failures = Failures(
            repository=repository, clock=clock, listeners=listeners, in_flight=in_flight, timing=timing
        )
        self._on_succeeded = listeners.wants(events.Succeeded)  # asked once: checked on every run

    async def execute(self, run: Run) -> None:
        """Run the task, then hand its outcome to the committer; the run is settled whatever happens."""
        try:
            now = self._clock.now()
            early = (run.record.scheduled_at - now).total_seconds()
            if early > 0:  # a static run claimed ahead of its due time
                await self._clock.sleep(early)
                now = self._clock.now()
            text = run.record.state
            if run.task.policies.history:
                run.counted = decode(text).runs
            if text is not None and '"r":' in text and (state := bookkeeping(text)).regular is not None:
                await self._triggered(run, state.regular, now)
            elif run.task.execution_mode is ExecutionMode.AT_MOST_ONCE:
                await self._at_most_once(run, now)
            else:
                await self._at_least_once(run, now)
        finally:
            if not run.committing:
                self._in_flight.settle(run)

    def _due(self, run: Run, now: datetime) -> tuple[RunState, datetime | None]:
        """The stored bookkeeping of a claimed run and the scheduled time of the run to make now (``None``:
        the catch-up policy makes none, and the record is already handed to the committer)."""
        if run.record.state is None and run.task.policies.plain:
            return EMPTY, run.record.scheduled_at  # the common case, decided without parsing anything
        state = bookkeeping(run.record.state)
        nominal = state.nominal or run.record.scheduled_at
        if not run.task.policies.late_rules:
            return state, nominal
        plan = self._timing.late(run.task, nominal, now)
        if plan.run_at is None:
            self._in_flight.commit(run, plan.next_at, state.finished("missed", started=None, finished=now))
        return state, plan.run_at

    async def _at_least_once(self, run: Run, started: datetime) -> None:
        task = run.task
        state, nominal = self._due(run, started)
        if nominal is None:
            return
        error: Exception | None = None
        attempt = state.attempt
        try:
            await self._body.invoke(self._body.context(task, run, nominal, attempt, state.origin), started)
        except LeaseLostException:
            self._lease_lost(task, nominal)
            return
        except Exception as exc:
            error = exc
        if run.lost:
            self._lease_lost(task, nominal)
            return
        if error is None and run.counted is None and not self._on_succeeded and type(task.schedule) is OnceSchedule:
            # A once-off run that succeeded is deleted: nothing else to work out, store or tell.
            self._in_flight.commit(run, None, EMPTY)
            return
        finished = self._clock.now()
        if error is None:
            if self._on_succeeded:
                self._listeners.emit(events.Succeeded(task, nominal, finished, attempt, finished - started))
            following = self._timing.following(task, nominal, finished)
            self._in_flight.commit(run, following, RunState(0, None, started, finished, "succeeded"))
        else:
            await self._failures.failed(run, state, nominal, error, started, finished)
        if run.counted is not None:
            await self._remember(run, nominal, started, finished, attempt, error)

    async def _at_most_once(self, run: Run, started: datetime) -> None:
        task = run.task
        state, nominal = self._due(run, started)
        if nominal is None:
            return
        next_at = self._timing.following(task, nominal, started, skip_overlap=False)
        # With overlap="skip" or "wait" the lease is kept while the body runs, so that no process starts the
        # next run meanwhile; the outcome is stored (and the lease released) afterwards.
        guarded = task.policies.overlap != "allow" and next_at is not None
        stored_at, after = self._in_flight.stored_form(run, next_at, state.starting(started))
        if not await self._in_flight.store_first(run, stored_at, after, release=not guarded):
            return
        lost, error, finished = await self._single_try(run, nominal, state.origin, started, guarded, "at-most-once")
        if lost:
            return
        if guarded:
            assert next_at is not None
            if next_at <= finished:
                next_at = self._timing.following(task, nominal, finished)
            outcome: Outcome = "succeeded" if error is None else outcome_of(error)
            self._in_flight.commit(
                run, next_at, state.finished(outcome, started=started, finished=finished, error=error)
            )
        if run.counted is not None:
            await self._remember(run, nominal, started, finished, 1, error)

    async def _triggered(self, run: Run, regular: datetime, started: datetime) -> None:
        """A run triggered by ``run_task_now``: one try (no retry, no catch-up rule), then the record goes back
        to its regular next run, ``regular``, with the rest of its bookkeeping as it was."""
        task = run.task
        kept = replace(decode(run.record.state), regular=None)
        at = run.record.scheduled_at
        # Like a regular run, an at-most-once run with overlap="allow" lets go of the record before its body.
        guarded = task.execution_mode is ExecutionMode.AT_LEAST_ONCE or task.policies.overlap != "allow"
        if not guarded:
            begun = replace(kept, last_started=started, last_finished=None, last_outcome=None, last_error=None)
            text = self._in_flight.counted(run, begun).encode()
            if not await self._in_flight.store_first(run, regular, text, release=True):
                return
        lost, error, finished = await self._single_try(run, at, kept.origin, started, guarded, "a triggered run")
        if lost:
            return
        if guarded:
            after = replace(
                kept,
                last_started=started,
                last_finished=finished,
                last_outcome="succeeded" if error is None else outcome_of(error),
                last_error=None if error is None else summary(error),
            )
            self._in_flight.submit(run, run.completion(regular, self._in_flight.counted(run, after).encode()))
        if run.counted is not None:
            await self._remember(run, at, started, finished, 1, error)

    async def _single_try(
        self, run: Run, scheduled: datetime, origin: dict[str, str] | None, started: datetime, guarded: bool, kind: str
    ) -> tuple[bool, Exception | None, datetime]:
        """Run the body once, not retried (``kind`` says why, for the log); heartbeats extend the lease only
        while the run holds it (``guarded``). Returns whether the lease was lost, the error, the end time."""
        task = run.task
        run.guarded = guarded
        error: Exception | None = None
        try:
            await self._body.invoke(self._body.context(task, run, scheduled, 1, origin), started)
        except LeaseLostException:
            self._lease_lost(task, scheduled)
            return True, None, self._clock.now()
        except Exception as exc:
            error = exc
            logger.error("Task %r failed (%s: not retried)", task, kind, exc_info=exc)
            if self._listeners.wants(events.Failed):
                self._listeners.emit(events.Failed(task, scheduled, self._clock.now(), 1, exc))
        finished = self._clock.now()
        if error is None and self._on_succeeded:
            self._listeners.emit(events.Succeeded(task, scheduled, finished, 1, finished - started))
        return False, error, finished

    def _lease_lost(self, task: StaticTask | Instance, nominal: datetime) -> None:
        logger.warning("Task %r lost its lease while running; its outcome is not stored", task)
        if self._listeners.wants(events.LeaseLost):
            self._listeners.emit(events.LeaseLost(task, nominal, self._clock.now()))

    async def _remember(
        self,
        run: Run,
        scheduled_at: datetime,
        started: datetime,
        finished: datetime,
        attempt: int,
        error: Exception | None,
    ) -> None:
        """Write the run's history entry (``history=``): one more storage call per run, made after the
        outcome is handed over, so the run's slot is not kept waiting for it."""
        assert run.counted is not None
        outcome = "succeeded" if error is None else outcome_of(error)
        entry = history.encode(scheduled_at, started, finished, outcome, attempt, error)
        hold = self._clock.hold("history", self._app_context)
        try:
            slot = run.counted % run.task.policies.history
            await history.write(self._repository, run.record, slot, entry, finished)
        finally:
            hold.release()


__all__ = ["Runner"]
