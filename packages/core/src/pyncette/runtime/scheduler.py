"""The scheduling loop: claim what is due, hand it to the workers, sleep until the next run is due.

Read top to bottom: :meth:`Scheduler.run` registers the static tasks, then repeats a *tick* (claim
static runs, then dynamic instances, as far as free slots allow: :mod:`.claims`) and sleeps until the
earliest run it knows of, never longer than ``poll_interval``. On shutdown it stops claiming and
drains: running tasks finish and their outcomes are stored, within ``drain_timeout``.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from ..abc import Repository
from ..clock import Clock, Hold, set_current_clock
from ..errors import PyncetteException
from ..model import AppContext
from ..redaction import get_logger
from .agenda import Agenda
from .alarm import Alarm
from .claims import Claims
from .committer import Committer, Pending
from .description import AppDescription
from .inflight import InFlight
from .retries import retrying
from .runner import Runner
from .slots import Slots
from .wakeups import Listener
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
        self.slots = Slots(_claim_limit(description), self.alarm.ring)
        self.agenda = Agenda(self.alarm, len(description.static_tasks))
        self._committer = Committer(repository, clock, self._stored, app_context)
        self.in_flight = InFlight(
            app_context=app_context,
            description=description,
            repository=repository,
            clock=clock,
            committer=self._committer,
            agenda=self.agenda,
            slots=self.slots,
        )
        self.runner = Runner(
            app_context=app_context,
            description=description,
            repository=repository,
            clock=clock,
            in_flight=self.in_flight,
            values=values,
        )
        self.claims = Claims(
            owner=app_context,
            description=description,
            repository=repository,
            clock=clock,
            agenda=self.agenda,
            slots=self.slots,
            in_flight=self.in_flight,
            committer=self._committer,
            stopping=self._stopping,
        )
        self._scope: anyio.CancelScope | None = None
        self.shutting_down = False
        self.cancelled = False
        self.last_tick: datetime | None = None

    def _stored(self, item: Pending, ok: bool) -> None:
        self.in_flight.stored(item, ok)

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
                    wakeups = Listener(self._repository, self.agenda)
                    if wakeups.available():
                        tg.start_soon(wakeups.run)
                    self.claims.start = WorkerPool(tg, self.runner.execute).start
                    # A shutdown while storage is unavailable at start stops the retries: nothing was claimed yet.
                    with contextlib.suppress(_Stopping):
                        await retrying(self._clock, "register static tasks", self.claims.register_static, self._pause)
                    task_status.started()
                    while not self._stopping():
                        started = time.perf_counter()
                        next_wake = await self.claims.tick()
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
                f"{run.task.canonical_name} (due {run.record.scheduled_at.isoformat()})" for run in self.in_flight.runs
            )
            logger.error(
                "Shutdown timed out after %s: %d run(s) left without a stored outcome: %s",
                timeout,
                len(runs),
                ", ".join(runs[:20]) + (" ..." if len(runs) > 20 else ""),
            )
        return not timed_out


def _claim_limit(description: AppDescription) -> int:
    """How many runs may be claimed and running at once."""
    if description.body_limit is None:
        return description.concurrency_limit
    # Fewer bodies at once: claim no more than that either, so no claimed run waits with its lease ticking.
    return min(description.concurrency_limit, description.body_limit)


__all__ = ["Scheduler", "ShutdownTimeout"]
