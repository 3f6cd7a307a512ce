"""A run whose body raised: Pyncette 1.x's failure modes, or the ``retry=`` policy (a retry after its backoff,
or giving up: skip to the next run, delete the record, or pause it)."""

from __future__ import annotations

import json
from datetime import datetime

from .. import events
from ..abc import PauseRule, Repository
from ..clock import Clock
from ..errors import TaskTimeout
from ..events import Listeners
from ..modes import FailureMode
from ..policies import run_key
from ..redaction import get_logger
from ..runstate import Outcome, RunState, summary
from ..schedule import OnceSchedule
from .inflight import InFlight
from .run import Run
from .timing import Timing

logger = get_logger("pyncette")


class Failures:
    """Decides and hands over what a failed at-least-once run stores."""

    def __init__(
        self, *, repository: Repository, clock: Clock, listeners: Listeners, in_flight: InFlight, timing: Timing
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._listeners = listeners
        self._in_flight = in_flight
        self._timing = timing

    async def failed(
        self, run: Run, state: RunState, nominal: datetime, error: Exception, started: datetime, finished: datetime
    ) -> None:
        """The body of the run scheduled at ``nominal`` raised ``error``."""
        task = run.task
        outcome = outcome_of(error)
        logger.error("Task %r failed (attempt %d)", task, state.attempt, exc_info=error)
        if self._listeners.wants(events.Failed):
            self._listeners.emit(events.Failed(task, nominal, finished, state.attempt, error))
        retry = task.policies.retry
        if retry is None:  # Pyncette 1.x's failure modes
            if task.failure_mode is FailureMode.UNLOCK:
                self._in_flight.submit(run, run.lease)
                return
            after = state.finished(outcome, started=started, finished=finished, error=error)
            if task.failure_mode is FailureMode.NONE:  # the lease expires, then the run is retried
                if run.counted is not None:  # but the history counts this try: store the counter, keep the lease
                    text = self._in_flight.counted(run, after).encode()
                    self._in_flight.submit(run, run.completion(run.record.scheduled_at, text, release=False))
                return
            self._in_flight.commit(run, self._timing.following(task, nominal, finished), after)
            return
        failures = state.failures + 1
        if isinstance(error, retry.retry_on) and failures < retry.attempts:
            retry_at = finished + retry.delay(failures, run_key(run.record.parent, run.record.name, nominal))
            if self._listeners.wants(events.Retrying):
                self._listeners.emit(events.Retrying(task, nominal, finished, state.attempt, error, retry_at))
            after = state.finished(
                outcome, started=started, finished=finished, failures=failures, nominal=nominal, error=error
            )
            self._in_flight.submit(run, run.completion(retry_at, self._in_flight.counted(run, after).encode()))
            return
        once = isinstance(task.schedule, OnceSchedule)
        action = retry.on_exhausted or ("delete" if once else "skip")
        logger.warning("Task %r failed %d time(s); giving up on the run due %s (%s)", task, failures, nominal, action)
        if self._listeners.wants(events.Exhausted):
            self._listeners.emit(events.Exhausted(task, nominal, finished, state.attempt, error, action))
        next_at = None if action == "delete" else self._timing.following(task, nominal, finished)
        if action == "pause":
            await self._pause(run, error)
            next_at = next_at or nominal  # a once-off instance keeps its run, to be tried again on resume
        self._in_flight.commit(run, next_at, state.finished(outcome, started=started, finished=finished, error=error))

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


def outcome_of(error: Exception) -> Outcome:
    """How a run whose body raised ``error`` ended."""
    return "timed_out" if isinstance(error, TaskTimeout) else "failed"


__all__ = ["Failures", "outcome_of"]
