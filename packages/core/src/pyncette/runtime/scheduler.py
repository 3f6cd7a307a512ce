"""The scheduling loop: claim what is due, hand it to the workers, sleep until the next run is due.

Read top to bottom: :meth:`Scheduler.run` registers the static tasks, then repeats a *tick* (claim
static runs, then dynamic instances, as far as free slots allow) and sleeps until the earliest run it
knows of, never longer than ``poll_interval``. On shutdown it stops claiming and drains: running
tasks finish and their outcomes are stored, within ``drain_timeout``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from ..abc import PARKED_AT, Lease, Record, RegisterMode, Repository
from ..clock import Clock, Hold, set_current_clock
from ..errors import PyncetteException, RecordDecodeError
from ..model import AppContext
from ..redaction import get_logger
from ..task import DynamicTask, Instance, StaticTask
from .agenda import Agenda
from .alarm import Alarm
from .committer import Committer, Pending
from .description import AppDescription
from .retries import Backoff, retrying
from .runner import Run, Runner
from .slots import Slots
from .workers import WorkerPool

logger = get_logger("pyncette")


class ShutdownTimeout(PyncetteException):
    """A graceful shutdown did not finish within ``drain_timeout``; some outcomes were left unstored."""


class _Stopping(Exception):
    """Raised out of a backoff pause of the loop once a shutdown has begun."""


class Scheduler:
    """The loop of one app context, and the parts it drives."""

    def __init__(
        self,
        app_context: AppContext,
        description: AppDescription,
        repository: Repository,
        clock: Clock,
        values: dict[str, Any],
    ) -> None:
        self._app_context = app_context
        self._description = description
        self._repository = repository
        self._clock = clock
        self.alarm = Alarm(clock, app_context)
        self.slots = Slots(description.concurrency_limit, self.alarm.ring)
        self.agenda = Agenda(self.alarm, len(description.static_tasks))
        self._committer = Committer(repository, clock, self._stored, app_context)
        self.runner = Runner(
            app_context=app_context,
            description=description,
            repository=repository,
            clock=clock,
            committer=self._committer,
            agenda=self.agenda,
            slots=self.slots,
            values=values,
        )
        self._backoff = Backoff(clock, description.poll_interval)
        self._workers: WorkerPool[Run] | None = None
        self._scope: anyio.CancelScope | None = None
        self.shutting_down = False
        self.cancelled = False
        self.last_tick: datetime | None = None

    def _stored(self, item: Pending, ok: bool) -> None:
        self.runner.stored(item, ok)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown` (or :meth:`cancel`)."""
        set_current_clock(self._clock)
        loop: Hold | None = self._clock.hold("scheduler loop", self._app_context)
        timed_out = False
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._committer.run)
                    self._workers = WorkerPool(tg, self.runner.execute)
                    # A shutdown while storage is unavailable at start stops the retries: nothing was claimed yet.
                    with contextlib.suppress(_Stopping):
                        await retrying(self._clock, "register static tasks", self._register_static, self._pause)
                    task_status.started()
                    while not self._stopping():
                        started = time.perf_counter()
                        next_wake = await self._tick()
                        self.last_tick = self._clock.now()
                        for listener in self._description.tick_listeners:
                            listener(self._app_context, time.perf_counter() - started)
                        if self._stopping():
                            break
                        if next_wake > self._clock.now():
                            await self.alarm.sleep_until(next_wake)
                        else:
                            await checkpoint()  # more is due at once: stay busy (a virtual clock must not move)
                    # Waiting for running tasks is not work of the loop: a virtual clock may move meanwhile.
                    assert loop is not None
                    waiting: Hold = loop
                    loop = None
                    waiting.release()
                    timed_out = not await self._drain()
                    loop = self._clock.hold("scheduler loop, stopping", self._app_context)
                    tg.cancel_scope.cancel()
        finally:
            if loop is not None:
                loop.release()
        if timed_out:
            raise ShutdownTimeout(
                f"shutdown did not finish within drain_timeout={self._description.drain_timeout}; "
                "unstored outcomes are retried by other instances once their leases expire"
            )
        logger.info("Pyncette stopped")

    def _stopping(self) -> bool:
        return self.shutting_down

    async def _pause(self, seconds: float) -> None:
        """The loop's backoff after a failed storage call: cut short by a shutdown, which ends the retries."""
        if not self.shutting_down:
            await self.alarm.sleep_until(self._clock.now() + timedelta(seconds=seconds))
        if self.shutting_down:
            raise _Stopping

    def shutdown(self) -> None:
        """Stop claiming; running tasks finish and their outcomes are stored, then :meth:`run` returns."""
        if not self.shutting_down:
            logger.info("Shutting down: no new work is claimed; waiting for %d running task(s)", self.slots.running)
        self.shutting_down = True
        self.alarm.ring()

    def cancel(self) -> None:
        """Stop at once, cancelling running tasks (their leases expire and they are retried elsewhere)."""
        self.shutting_down = self.cancelled = True
        if self._scope is not None:
            self._scope.cancel()

    async def _drain(self) -> bool:
        """Wait (not holding the clock) for running tasks and their commits; ``False`` if ``drain_timeout`` passed."""
        timeout = self._description.drain_timeout
        if not self.slots.running:
            return True
        timed_out = False
        async with anyio.create_task_group() as tg:

            async def timer(seconds: float) -> None:
                nonlocal timed_out
                drain = self._clock.hold("drain timeout", self._app_context)
                try:
                    await self._clock.sleep(seconds)
                finally:
                    drain.release()
                timed_out = True
                tg.cancel_scope.cancel()

            if timeout is not None:
                tg.start_soon(timer, timeout.total_seconds())
            await self.slots.wait_idle()
            tg.cancel_scope.cancel()
        if timed_out:
            runs = sorted(
                f"{run.task.canonical_name} (due {run.record.scheduled_at.isoformat()})"
                for run in self.runner.in_flight
            )
            logger.error(
                "Shutdown timed out after %s: %d run(s) left without a stored outcome: %s",
                timeout,
                len(runs),
                ", ".join(runs[:20]) + (" ..." if len(runs) > 20 else ""),
            )
        return not timed_out

    # -- one tick ---------------------------------------------------------------------------------

    async def _register_static(self) -> None:
        now = self._clock.now()
        tasks = [task for task in self._description.static_tasks if task.enabled]
        records = [fresh_static_record(task, now) for task in tasks]
        if records:
            created = await self._repository.register(records, now=now, mode=RegisterMode.CREATE)
            self.agenda.measured(self._clock.now() - now)  # a first estimate, so even the first run is claimed ahead
            for task, record, new in zip(tasks, records, created, strict=True):
                if new:  # otherwise its schedule is learnt from storage on the first tick
                    self.agenda.static_due[task.name] = record.scheduled_at

    async def _tick(self) -> datetime:
        """Claim and start what is due and fits in the free slots; return when to look again.

        One tick claims at most one batch per dynamic parent, so a long backlog in one parent cannot
        starve static tasks or other parents: when a batch came back full, the next tick starts at once.
        Every claim reads the clock afresh, so a lease always runs for its full duration from its claim.
        """
        now = self._clock.now()
        next_wake = now + self._description.poll_interval
        self.slots.starved = False
        self.agenda.forget_dynamic(now)
        for task in self._description.static_tasks:
            if not task.enabled or self.shutting_down:
                continue
            if self.slots.free() < 1:
                self.slots.starved = True
                break
            look_again = await self._guarded(task.storage_key()[0], "claim", partial(self._static, task, now))
            if look_again is not None:
                next_wake = min(next_wake, look_again)
        for parent, template in self._description.template_of_parent.items():
            if not template.enabled or self.shutting_down:
                continue
            limit = min(self.slots.free(), self._description.batch_size)
            if limit < 1:
                self.slots.starved = True
                break
            full = await self._guarded(parent, "claim", partial(self._dynamic, parent, template, limit))
            if full is not None:
                next_wake = min(next_wake, full)
        upcoming = self.agenda.next_dynamic()  # including runs noted while this tick ran
        if upcoming is not None:
            next_wake = min(next_wake, upcoming)
        return max(next_wake, now)

    async def _guarded(self, key: str, what: str, step: Callable[[], Awaitable[datetime | None]]) -> datetime | None:
        """One step of the tick. A step whose storage call failed is logged and kept away for a while (see
        :class:`~pyncette.runtime.retries.Backoff`); the tick goes on with the rest."""
        blocked = self._backoff.blocked_until(key)
        if blocked is not None:
            return blocked
        try:
            result = await step()
        except Exception as exc:
            return self._backoff.failed(key, what, exc)
        self._backoff.succeeded(key)
        return result

    async def _static(self, task: StaticTask, now: datetime) -> datetime | None:
        """Claim the static task if it is due (or nearly); else return when to look again."""
        running_until = self.agenda.static_running.get(task.name)
        if running_until is not None and running_until > now:
            return running_until
        due = self.agenda.static_due.get(task.name)
        lead = self.agenda.claim_lead()
        if due is not None and due - lead > now:
            return due - lead
        parent, name = task.storage_key()
        now = self._clock.now()
        # Claimed as of its due time, up to the lead early, so that the round trip is over when it is due;
        # the worker waits for the due time before starting it.
        claim_at = now if due is None else max(now, due)
        claimed = await self._repository.claim(
            parent, now=claim_at, limit=1, lease_until=claim_at + task.lease_duration, token=_token()
        )
        self.agenda.measured(self._clock.now() - now)
        if claimed and not claimed[0].corrupt:
            self.agenda.static_due[task.name] = None
            self.agenda.static_running[task.name] = claim_at + task.lease_duration
            self._start(task, claimed[0])
            return None
        # Someone else ran it or holds it: learn when to look again instead of polling blindly.
        record = claimed[0] if claimed else await self._repository.get(parent, name)
        if record is None or record.corrupt:
            record = await self._recreate_static(task, record, now)
        due = max(record.scheduled_at, record.locked_until or record.scheduled_at)
        self.agenda.static_due[task.name] = due
        return due

    async def _recreate_static(self, task: StaticTask, found: Record | None, now: datetime) -> Record:
        """Put back a static task's record that was deleted behind the app's back or can no longer be read."""
        if found is None:
            logger.warning("The stored record of static task %r was missing; recreating it", task.name)
        else:
            logger.error(
                "The stored record of static task %r cannot be decoded (%s); recreating it", task.name, found.corrupt
            )
        record = fresh_static_record(task, now)
        mode = RegisterMode.CREATE if found is None else RegisterMode.FORCE
        await self._repository.register([record], now=now, mode=mode)
        return record

    async def _dynamic(self, parent: str, template: DynamicTask, limit: int) -> datetime | None:
        """Claim a batch of due instances of one parent; return now when the batch was full (more may be due)."""
        now = self._clock.now()
        claimed = await self._repository.claim(
            parent, now=now, limit=limit, lease_until=now + template.lease_duration, token=_token()
        )
        for record in claimed:
            if record.corrupt:
                self._park(record, record.corrupt)
                continue
            try:
                if record.spec is None:
                    raise RecordDecodeError(f"record {parent}/{record.name} of a dynamic task has no spec")
                instance = template.from_spec(record.name, record.spec)
            except RecordDecodeError as exc:
                self._park(record, str(exc))
                continue
            self._start(instance, record)
        if len(claimed) < limit:
            return None
        if self.slots.free() > 0:
            return now  # more may be due: look again right away
        self.slots.starved = True  # more may be due: look again when a slot frees up
        return None

    def _start(self, task: StaticTask | Instance, record: Record) -> None:
        assert self._workers is not None
        self._workers.start(self.runner.claimed(task, record))

    def _park(self, record: Record, reason: str) -> None:
        """A record that cannot be decoded: logged once, and set aside (committed to PARKED_AT if we hold it)."""
        logger.error(
            "Record %s/%s cannot be decoded and is set aside (it stays stored; scheduling the instance again "
            "replaces it): %s",
            record.parent,
            record.name,
            reason,
        )
        if record.locked_by is not None:
            lease = Lease(record.parent, record.name, record.locked_by)
            hold: Hold = self._clock.hold("parking a record", self._app_context)
            self._committer.submit(Pending(lease, PARKED_AT), hold)


def fresh_static_record(task: StaticTask, now: datetime) -> Record:
    """A static task's record as a first start writes it: due at its schedule's first run after ``now``."""
    parent, name = task.storage_key()
    assert task.schedule is not None
    return Record(parent, name, None, task.schedule.first(now))


def _token() -> str:
    return uuid.uuid4().hex


__all__ = ["Scheduler", "ShutdownTimeout", "fresh_static_record"]
