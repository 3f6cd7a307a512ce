"""One run of one task, from the claimed record to the stored outcome."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import anyio

from .. import events
from ..abc import PARKED_AT, Completion, Lease, PauseRule, Record, Repository
from ..clock import Clock, Hold
from ..errors import LeaseLostException, TaskTimeout
from ..model import AppContext, Context
from ..modes import ExecutionMode, FailureMode
from ..policies import run_key
from ..redaction import get_logger
from ..runstate import EMPTY, Outcome, RunState, bookkeeping, decode, summary
from ..schedule import UTC, OnceSchedule, Schedule
from ..task import Instance, StaticTask
from . import history, lateness
from .agenda import Agenda
from .committer import Committer, Pending
from .description import AppDescription
from .slots import Slots

logger = get_logger("pyncette")


@dataclass(eq=False, slots=True)
class Run:
    """A claimed record and the task it runs, with the clock hold that counts it as work in progress."""

    task: StaticTask | Instance
    #: The claimed record (leased: its ``locked_by`` is this run's lease token).
    record: Record
    hold: Hold | None
    runner: Runner
    #: The body is over and the outcome is with the committer.
    committing: bool = False
    #: With ``history=``: the run counter as claimed (the slot of this run's entry, modulo the size).
    counted: int | None = None
    #: Whether heartbeats extend the lease (not once the run let go of its record before its body).
    guarded: bool = True
    #: A heartbeat found the lease lost.
    lost: bool = False

    @property
    def lease(self) -> Lease:
        """The run's lease (made when needed: most runs only ever commit, through :meth:`completion`)."""
        record = self.record
        assert record.locked_by is not None
        return Lease(record.parent, record.name, record.locked_by)

    def completion(self, next_at: datetime | None, state: str | None = None, *, release: bool = True) -> Completion:
        """The run's outcome to store: reschedule to ``next_at`` (or delete the record when ``None``), storing
        ``state`` (``None``: keep the stored one), and let go of the lease unless ``release`` is false."""
        record = self.record
        assert record.locked_by is not None
        return Completion(record.parent, record.name, record.locked_by, next_at, state, release)

    async def heartbeat(self) -> None:
        """The body's ``context.heartbeat()``: extend the lease, or raise
        :class:`~pyncette.errors.LeaseLostException` once it is lost."""
        if self.guarded:
            await self.runner.extend(self)

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
        self._listeners = listeners = description.listeners
        # Asked once: the hot path of every run checks these.
        self._on_started = listeners.wants(events.Started)
        self._on_succeeded = listeners.wants(events.Succeeded)
        #: Runs claimed and not yet settled, for reports at shutdown.
        self.in_flight: set[Run] = set()

    # -- running --------------------------------------------------------------------------------------

    def claimed(self, task: StaticTask | Instance, record: Record) -> Run:
        """A freshly claimed run, counted as work in progress from now on."""
        assert record.locked_by is not None
        run = Run(task, record, self._clock.hold(task.name, self._app_context), self)
        self._slots.taken()
        self.in_flight.add(run)
        return run

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
                self._settle(run)

    def _due(self, run: Run, now: datetime) -> tuple[RunState, datetime | None]:
        """The stored bookkeeping of a claimed run and the scheduled time of the run to make now (``None``:
        the catch-up policy makes none, and the record is already handed to the committer)."""
        if run.record.state is None and run.task.policies.plain:
            return EMPTY, run.record.scheduled_at  # the common case, decided without parsing anything
        state = bookkeeping(run.record.state)
        nominal = state.nominal or run.record.scheduled_at
        if run.task.policies.late_rules:
            return state, self._late(run, state, nominal, now)
        return state, nominal

    def _late(self, run: Run, state: RunState, nominal: datetime, now: datetime) -> datetime | None:
        """Apply the catch-up policy to a run scheduled at ``nominal``: the time of the run to make now, or
        ``None`` when none is to be made (then the record is already handed to the committer)."""
        task = run.task
        assert task.schedule is not None
        plan = lateness.plan(task.schedule, task.policies, nominal, now)
        if plan.missed:
            assert plan.first_missed is not None
            self._missed(task, plan.first_missed, now, plan.missed)
        if plan.run_at is None:
            self._commit(run, plan.next_at, state.finished("missed", started=None, finished=now))
        return plan.run_at

    async def _at_least_once(self, run: Run, started: datetime) -> None:
        task = run.task
        state, nominal = self._due(run, started)
        if nominal is None:
            return
        error: Exception | None = None
        attempt = state.attempt
        try:
            await self._invoke(self._context(run, nominal, attempt, state.origin), started)
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
            self._commit(run, None, EMPTY)
            return
        finished = self._clock.now()
        if error is None:
            if self._on_succeeded:
                self._listeners.emit(events.Succeeded(task, nominal, finished, attempt, finished - started))
            self._commit(
                run, self._following(task, nominal, finished), RunState(0, None, started, finished, "succeeded")
            )
        else:
            await self._failed(run, state, nominal, error, started, finished)
        if run.counted is not None:
            await self._remember(run, nominal, started, finished, attempt, error)

    async def _failed(
        self, run: Run, state: RunState, nominal: datetime, error: Exception, started: datetime, finished: datetime
    ) -> None:
        task = run.task
        outcome = _outcome(error)
        logger.error("Task %r failed (attempt %d)", task, state.attempt, exc_info=error)
        if self._listeners.wants(events.Failed):
            self._listeners.emit(events.Failed(task, nominal, finished, state.attempt, error))
        retry = task.policies.retry
        if retry is None:  # Pyncette 1.x's failure modes
            if task.failure_mode is FailureMode.NONE:  # the lease expires, then the run is retried
                if run.counted is not None:  # but the history counts this try: store the counter, keep the lease
                    after = self._counted(run, state.finished(outcome, started=started, finished=finished, error=error))
                    self._submit(run, run.completion(run.record.scheduled_at, after.encode(), release=False))
                return
            if task.failure_mode is FailureMode.UNLOCK:
                self._submit(run, run.lease)
                return
            after = state.finished(outcome, started=started, finished=finished, error=error)
            self._commit(run, self._following(task, nominal, finished), after)
            return
        failures = state.failures + 1
        if isinstance(error, retry.retry_on) and failures < retry.attempts:
            retry_at = finished + retry.delay(failures, run_key(run.record.parent, run.record.name, nominal))
            if self._listeners.wants(events.Retrying):
                self._listeners.emit(events.Retrying(task, nominal, finished, state.attempt, error, retry_at))
            after = state.finished(
                outcome, started=started, finished=finished, failures=failures, nominal=nominal, error=error
            )
            text = self._counted(run, after).encode()
            self._submit(run, run.completion(retry_at, text))
            return
        once = isinstance(task.schedule, OnceSchedule)
        action = retry.on_exhausted or ("delete" if once else "skip")
        logger.warning("Task %r failed %d time(s); giving up on the run due %s (%s)", task, failures, nominal, action)
        if self._listeners.wants(events.Exhausted):
            self._listeners.emit(events.Exhausted(task, nominal, finished, state.attempt, error, action))
        next_at = None if action == "delete" else self._following(task, nominal, finished)
        if action == "pause":
            await self._pause(run, error)
            next_at = next_at or nominal  # a once-off instance keeps its run, to be tried again on resume
        self._commit(run, next_at, state.finished(outcome, started=started, finished=finished, error=error))

    async def _pause(self, run: Run, error: Exception) -> None:
        """Pause the record whose retries are exhausted (``on_exhausted="pause"``), before its commit so that
        no process claims its next run meanwhile."""
        info = json.dumps(
            {"note": f"retries exhausted: {summary(error)}", "by": "pyncette", "at": self._clock.now().isoformat()},
            ensure_ascii=False,
        )
        rule = PauseRule(run.record.parent, run.record.name, False, info)
        try:
            await self._repository.pause(rule, now=self._clock.now())
        except NotImplementedError:
            logger.error("Cannot pause %r (on_exhausted='pause'): the backend has no control plane", run.task)
        except Exception as exc:
            logger.error("Could not pause %r after its retries were exhausted: %s", run.task, exc)

    async def _at_most_once(self, run: Run, started: datetime) -> None:
        task = run.task
        policies = task.policies
        state, nominal = self._due(run, started)
        if nominal is None:
            return
        next_at = self._following(task, nominal, started, skip_overlap=False)
        # With overlap="skip" or "wait" the lease is kept while the body runs, so that no process starts the
        # next run meanwhile; the outcome is stored (and the lease released) afterwards.
        guarded = policies.overlap != "allow" and next_at is not None
        stored_at, after = self._stored_form(run, next_at, state.starting(started))
        if not await self._store_start(run, stored_at, after, release=not guarded):
            return
        lost, error, finished = await self._single_try(run, nominal, state.origin, started, guarded, "at-most-once")
        if lost:
            return
        if guarded:
            assert next_at is not None
            if next_at <= finished:
                next_at = self._following(task, nominal, finished)
            outcome: Outcome = "succeeded" if error is None else _outcome(error)
            self._commit(run, next_at, state.finished(outcome, started=started, finished=finished, error=error))
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
            if not await self._store_start(run, regular, self._counted(run, begun).encode(), release=True):
                return
        lost, error, finished = await self._single_try(run, at, kept.origin, started, guarded, "a triggered run")
        if lost:
            return
        if guarded:
            after = replace(
                kept,
                last_started=started,
                last_finished=finished,
                last_outcome="succeeded" if error is None else _outcome(error),
                last_error=None if error is None else summary(error),
            )
            stored_state = self._counted(run, after).encode()
            self._submit(run, run.completion(regular, stored_state))
        if run.counted is not None:
            await self._remember(run, at, started, finished, 1, error)

    async def _store_start(self, run: Run, next_at: datetime | None, state: str | None, *, release: bool) -> bool:
        """Commit a run that is not retried before its body starts (at-most-once, triggered); ``False`` (and
        nothing is to run) when the lease was lost meanwhile."""
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

    async def _single_try(
        self, run: Run, scheduled: datetime, origin: dict[str, str] | None, started: datetime, guarded: bool, kind: str
    ) -> tuple[bool, Exception | None, datetime]:
        """Run the body once, not retried (``kind`` says why, for the log); heartbeats extend the lease only
        while the run holds it (``guarded``). Returns whether the lease was lost, the error, the end time."""
        task = run.task
        run.guarded = guarded
        error: Exception | None = None
        try:
            await self._invoke(self._context(run, scheduled, 1, origin), started)
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

    def _missed(self, task: StaticTask | Instance, first: datetime, now: datetime, count: int) -> None:
        logger.info("Task %r missed %d run(s) from %s (catch-up policy)", task, count, first.isoformat())
        if self._listeners.wants(events.Missed):
            self._listeners.emit(events.Missed(task, first, now, count))

    def _lease_lost(self, task: StaticTask | Instance, nominal: datetime) -> None:
        logger.warning("Task %r lost its lease while running; its outcome is not stored", task)
        if self._listeners.wants(events.LeaseLost):
            self._listeners.emit(events.LeaseLost(task, nominal, self._clock.now()))

    def _commit(self, run: Run, next_at: datetime | None, state: RunState) -> None:
        """Hand the outcome to the committer: reschedule to the nominal time ``next_at`` (with its jitter
        offset) or delete the record, storing ``state``."""
        if next_at is None:
            self._submit(run, run.completion(None))
            return
        self._submit(run, run.completion(*self._stored_form(run, next_at, state)))

    def _stored_form(self, run: Run, next_at: datetime | None, state: RunState) -> tuple[datetime | None, str | None]:
        """The stored due time of the nominal ``next_at`` and the state text to store with it (none when the
        record is deleted)."""
        if next_at is None:
            return None, None
        state = self._counted(run, state)
        offset = run.task.policies.offset(run.record.parent, run.record.name, next_at)
        if offset and next_at < PARKED_AT - offset:
            return next_at + offset, replace(state, nominal=next_at).encode()
        return next_at, state.encode()

    @staticmethod
    def _counted(run: Run, state: RunState) -> RunState:
        """``state`` with the history's run counter moved past this run (unchanged without history)."""
        return state if run.counted is None else replace(state, runs=run.counted + 1)

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
        outcome = "succeeded" if error is None else _outcome(error)
        entry = history.encode(scheduled_at, started, finished, outcome, attempt, error)
        hold = self._clock.hold("history", self._app_context)
        try:
            slot = run.counted % run.task.policies.history
            await history.write(self._repository, run.record, slot, entry, finished)
        finally:
            hold.release()

    def _submit(self, run: Run, change: Completion | Lease) -> None:
        """Hand ``change`` (an outcome to store, or the lease to let go of) to the committer. It settles the run
        once that is stored; the slot stays taken until then, but this worker moves on."""
        run.committing = True
        self._slots.body_done()
        self._committer.submit(Pending(change, run.record.locked_until, owner=run), run.give_hold())

    async def extend(self, run: Run) -> None:
        """A heartbeat of ``run``: extend its lease by the task's lease duration."""
        task = run.task
        if not await self._repository.extend(run.lease, lease_until=self._clock.now() + task.lease_duration):
            run.lost = True
            raise LeaseLostException(task)

    def _context(self, run: Run, nominal: datetime, attempt: int, origin: dict[str, str] | None) -> Context:
        task = run.task
        context = Context._of_run(
            self._app_context, task, nominal.astimezone(task.tz), attempt, run, origin, self._values
        )
        if self._on_started:
            self._listeners.emit(events.Started(task, nominal, self._clock.now(), attempt))
        return context

    def _invoke(self, context: Context, started: datetime) -> Awaitable[None]:
        """Call the body through the middlewares; cancel it after the task's ``timeout`` (on the app's clock)."""
        timeout = context.task.policies.timeout
        if timeout is not None:
            return self._call_with_timeout(context, started, timeout)
        if not self._description.middlewares:
            return context.task.func(context)  # returned, not awaited here: no coroutine of ours per run
        return self._call(context)

    async def _call_with_timeout(self, context: Context, started: datetime, limit: timedelta) -> None:
        timed_out = done = False
        error: Exception | None = None
        async with anyio.create_task_group() as group:

            async def watchdog() -> None:
                nonlocal timed_out
                hold = self._clock.hold("timeout watchdog", self._app_context)
                try:
                    await self._clock.sleep((started + limit - self._clock.now()).total_seconds())
                finally:
                    hold.release()
                if not done:
                    timed_out = True
                    group.cancel_scope.cancel()

            group.start_soon(watchdog)
            try:
                await self._call(context)
            except Exception as exc:
                error = exc
            done = True
            group.cancel_scope.cancel()
        if timed_out:
            task = context.task
            if self._listeners.wants(events.TimedOut):
                self._listeners.emit(
                    events.TimedOut(
                        task, context.scheduled_at.astimezone(UTC), self._clock.now(), context.attempt, limit
                    )
                )
            raise TaskTimeout(f"task {task.canonical_name!r} ran longer than its timeout of {limit}")
        if error is not None:
            raise error

    async def _call(self, context: Context) -> None:
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

    def _following(
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
                following = self._following_with_policies(task, schedule, nominal, now, skip_overlap)
        except (OverflowError, ValueError):
            following = PARKED_AT
        if following is not None and following >= PARKED_AT:
            logger.warning("Task %r has no run left before 9999-12-31; parking it there", task)
            return PARKED_AT
        return following

    def _following_with_policies(
        self, task: StaticTask | Instance, schedule: Schedule, nominal: datetime, now: datetime, skip_overlap: bool
    ) -> datetime | None:
        """:meth:`_following` under coalescing and ``overlap="skip"``, reporting the runs left out."""
        policies = task.policies
        following = lateness.following(schedule, policies, nominal, now)
        if policies.coalesce != "all":
            natural = schedule.next_after(nominal)
            if natural is not None and following is not None and natural < following:
                self._missed(task, natural, now, lateness.count(schedule, natural, following))
        if skip_overlap and policies.overlap == "skip" and following is not None and following <= now:
            resumed = schedule.fast_forward(following, now)
            skipped = lateness.count(schedule, following, resumed)
            logger.info("Task %r skipped %d run(s) that came due while it ran", task, skipped)
            if self._listeners.wants(events.SkippedOverlap):
                self._listeners.emit(events.SkippedOverlap(task, following, now, skipped))
            following = resumed
        return following

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
        self._settle(run)

    def _settle(self, run: Run) -> None:
        self.in_flight.discard(run)
        if isinstance(run.task, StaticTask):
            self._agenda.static_running.pop(run.task.name, None)
        self._slots.settled(committing=run.committing)
        if run.hold is not None:
            run.give_hold().release()


def _outcome(error: Exception) -> Outcome:
    """How a run whose body raised ``error`` ended."""
    return "timed_out" if isinstance(error, TaskTimeout) else "failed"


__all__ = ["Run", "Runner"]
