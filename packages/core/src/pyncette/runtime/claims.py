"""Claiming: each tick, take what is due from storage, as far as free slots allow, and hand it to the workers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

from ..abc import PARKED_AT, Completion, Record, RegisterMode, Repository
from ..clock import Clock, Hold
from ..errors import RecordDecodeError
from ..redaction import get_logger
from ..task import DynamicTask, StaticTask
from .agenda import Agenda
from .committer import Committer, Pending
from .description import AppDescription
from .inflight import InFlight
from .retries import Backoff
from .run import Run
from .slots import Slots

logger = get_logger("pyncette")


class Claims:
    """The claiming half of the loop: static tasks one by one, then a batch per dynamic parent."""

    def __init__(
        self,
        *,
        owner: object,
        description: AppDescription,
        repository: Repository,
        clock: Clock,
        agenda: Agenda,
        slots: Slots,
        in_flight: InFlight,
        committer: Committer,
        stopping: Callable[[], bool],
    ) -> None:
        self._owner = owner
        self._description = description
        self._repository = repository
        self._clock = clock
        self._agenda = agenda
        self._slots = slots
        self._in_flight = in_flight
        self._committer = committer
        self._stopping = stopping
        #: Where claimed runs go (the worker pool, once the loop runs).
        self.start: Callable[[Run], None] = _not_running
        self._backoff = Backoff(clock, description.poll_interval)

    async def register_static(self) -> None:
        """Create the records of the enabled static tasks that have none yet (first start)."""
        now = self._clock.now()
        tasks = [task for task in self._description.static_tasks if task.enabled]
        records = [fresh_static_record(task, now) for task in tasks]
        if records:
            created = await self._repository.register(records, now=now, mode=RegisterMode.CREATE)
            self._agenda.measured(self._clock.now() - now)  # a first estimate, so even the first run is claimed ahead
            for task, record, new in zip(tasks, records, created, strict=True):
                if new:  # otherwise its schedule is learnt from storage on the first tick
                    self._agenda.static_due[task.name] = record.scheduled_at

    async def tick(self) -> datetime:
        """Claim and start what is due and fits in the free slots; return when to look again.

        One tick claims at most one batch per dynamic parent, so a long backlog in one parent cannot
        starve static tasks or other parents: when a batch came back full, the next tick starts at once.
        Every claim reads the clock afresh, so a lease always runs for its full duration from its claim.
        """
        now = self._clock.now()
        next_wake = now + self._description.poll_interval
        self._slots.starved = False
        self._agenda.forget_dynamic(now)
        for task in self._description.static_tasks:
            if not task.enabled or self._stopping():
                continue
            if self._slots.free() < 1:
                self._slots.starved = True
                break
            look_again = await self._guarded(task.storage_key()[0], "claim", partial(self._static, task, now))
            if look_again is not None:
                next_wake = min(next_wake, look_again)
        for parent, template in self._description.template_of_parent.items():
            if not template.enabled or self._stopping():
                continue
            limit = min(self._slots.free(), self._description.batch_size)
            if limit < 1:
                self._slots.starved = True
                break
            full = await self._guarded(parent, "claim", partial(self._dynamic, parent, template, limit))
            if full is not None:
                next_wake = min(next_wake, full)
        upcoming = self._agenda.next_dynamic()  # including runs noted while this tick ran
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
        """Claim the static task if it is due (or nearly); else return when to look again.

        A static task not yet due is still looked at once per ``poll_interval`` (one claim, which finds
        nothing unless a run was triggered elsewhere with ``run_task_now``; see :meth:`Agenda.probe_interval`)."""
        running_until = self._agenda.static_running.get(task.name)
        if running_until is not None and running_until > now:
            return running_until
        due = self._agenda.static_due.get(task.name)
        lead = self._agenda.claim_lead()
        poll = self._agenda.probe_interval(self._description.poll_interval)
        probe = due is not None and due - lead > now
        if probe:
            assert due is not None
            looked = self._agenda.static_looked.get(task.name)
            if looked is not None and looked + poll > now:
                return min(due - lead, looked + poll)
        parent, name = task.storage_key()
        now = self._clock.now()
        # Claimed as of its due time, up to the lead early, so that the round trip is over when it is due;
        # the worker waits for the due time before starting it.
        claim_at = now if due is None or probe else max(now, due)
        claimed = await self._repository.claim(
            parent, now=claim_at, limit=1, lease_until=claim_at + task.lease_duration, token=_token()
        )
        self._agenda.measured(self._clock.now() - now)
        self._agenda.static_looked[task.name] = now
        if claimed and not claimed[0].corrupt:
            self._agenda.static_due[task.name] = None
            self._agenda.static_running[task.name] = claim_at + task.lease_duration
            self.start(self._in_flight.claimed(task, claimed[0]))
            return None
        if probe and not claimed:
            assert due is not None
            return min(due - lead, now + poll)
        # Someone else ran it or holds it: learn when to look again instead of polling blindly.
        record = claimed[0] if claimed else await self._repository.get(parent, name)
        if record is None or record.corrupt:
            record = await self._recreate_static(task, record, now)
        due = max(record.scheduled_at, record.locked_until or record.scheduled_at)
        if due <= now:  # due but not claimable: a pause holds it
            due = now + poll
        self._agenda.static_due[task.name] = due
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
            self.start(self._in_flight.claimed(instance, record))
        if len(claimed) < limit:
            return None
        if self._slots.free() > 0:
            return now  # more may be due: look again right away
        self._slots.starved = True  # more may be due: look again when a slot frees up
        return None

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
            change = Completion(record.parent, record.name, record.locked_by, PARKED_AT)
            hold: Hold = self._clock.hold("parking a record", self._owner)
            self._committer.submit(Pending(change, record.locked_until), hold)


def _not_running(run: Run) -> None:
    raise RuntimeError("claimed a run before the worker pool was started")


def fresh_static_record(task: StaticTask, now: datetime) -> Record:
    """A static task's record as a first start writes it: due at its schedule's first run after ``now``."""
    parent, name = task.storage_key()
    assert task.schedule is not None
    return Record(parent, name, None, task.schedule.first(now))


def _token() -> str:
    return uuid.uuid4().hex


__all__ = ["Claims", "fresh_static_record"]
