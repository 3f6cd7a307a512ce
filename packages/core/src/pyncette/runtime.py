"""The scheduler runtime: :class:`PyncetteContext`, the object ``app.create()`` yields.

Read top to bottom:

1. the public API used by applications (schedule, inspect, shut down);
2. :meth:`PyncetteContext.run`, the main loop: claim due work, start it,
   sleep until the earliest next run (never longer than ``poll_interval``);
3. one run of one task, from claim to commit;
4. the committer, which batches commits and unlocks into few round trips;
5. retries of storage calls.
"""

from __future__ import annotations

import copy
import heapq
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint

from .abc import Completion, Lease, Record, RegisterMode, Repository
from .clock import Clock, set_current_clock
from .errors import ConfigurationError, LeaseLostException, RecordDecodeError, TaskLockedException
from .model import Context, ExecutionMode, FailureMode, ListTasksResponse, MiddlewareFunc, TaskState
from .task import Task, validate_instance_name

if TYPE_CHECKING:
    from .app import Pyncette

logger = logging.getLogger("pyncette")

T = TypeVar("T")

#: Names a task context already uses; fixtures and injected values may not take them.
RESERVED_CONTEXT_NAMES = frozenset({"app_context", "task", "scheduled_at", "args", "heartbeat"})
_REGISTER_CHUNK = 1000
_MAX_BACKOFF = 30.0
_MAX_CLAIM_LEAD = timedelta(milliseconds=50)
#: How many upcoming dynamic runs this process remembers to wake for (beyond that, polling finds them).
_MAX_HINTS = 10_000


@dataclass
class _Pending:
    """A commit or unlock waiting for the committer."""

    lease: Lease
    next_at: datetime | None
    unlock: bool
    #: The run to finish once stored (runs that do not wait for the result).
    task: Task | None
    #: Set when stored, for a run that waits for the result.
    done: anyio.Event | None = None
    result: bool = False


class PyncetteContext:
    """A running (or ready to run) Pyncette app bound to open storage."""

    def __init__(self, app: Pyncette, repository: Repository, clock: Clock, context_values: dict[str, Any]) -> None:
        self.app = app
        self.repository = repository
        self.clock = clock
        self.last_tick: datetime | None = None
        self._values = context_values
        self._poll_interval = app.poll_interval.total_seconds()
        self._concurrency_limit = app.concurrency_limit
        self._batch_size = app.batch_size
        self._static = [t for t in app.tasks if not t.dynamic]
        self._templates = [t for t in app.tasks if t.dynamic]
        self._template_of_parent = {parent: t for t in self._templates for parent in t.parents()}
        self._static_due: dict[str, datetime | None] = {}
        # How long a slow static claim takes (on the app's clock). The loop claims a static
        # run this much ahead of its due time and starts it on time; on a virtual clock it is zero.
        self._claim_latency = timedelta(0)
        # Static tasks running here, with the expiry of their lease: not claimed again until it passes.
        self._static_running: dict[str, datetime] = {}
        # When the loop will next wake up, while it sleeps; earlier work wakes it.
        self._next_wake: datetime | None = None
        # Upcoming runs of dynamic instances this process knows of (from its own commits and
        # registrations), a heap, so it wakes for them instead of waiting for the next poll.
        self._dynamic_hints: list[datetime] = []
        self._running = 0  # claimed runs not yet settled (committed, unlocked or given up)
        self._committing = 0  # of those, the ones whose body is over and whose commit is queued or in flight
        self._starved = False
        self._shutting_down = False
        self._wake_scope: anyio.CancelScope | None = None
        self._wake_pending = False
        self._wake_held = False
        self._commit_hold = False
        self._run_scope: anyio.CancelScope | None = None
        self._pending: list[_Pending] = []
        self._queue: deque[tuple[Task, Record]] = deque()
        self._idle_workers: list[anyio.Event] = []
        self._worker_waking = False
        self._pending_event = anyio.Event()
        self._drained = anyio.Event()
        self._middlewares: list[MiddlewareFunc] = list(app.middlewares)

    # ---------------------------------------------------------------------------------------------
    # 1. Public API
    # ---------------------------------------------------------------------------------------------

    def add_to_context(self, name: str, value: Any) -> None:
        """Make ``value`` available as ``context.<name>`` in every task."""
        validate_context_names([name])
        if name in self._values:
            raise ConfigurationError(f"context name {name!r} is already in use")
        self._values[name] = value

    def shutdown(self) -> None:
        """Stop claiming work; running tasks finish and their commits land, then :meth:`run` returns."""
        if not self._shutting_down:
            logger.info("Shutting down: no new work is claimed; waiting for %d running task(s)", self._running)
        self._shutting_down = True
        self._wakeup()

    def cancel(self) -> None:
        """Stop at once, cancelling running tasks (their leases expire and they are retried elsewhere)."""
        self._shutting_down = True
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def schedule_task(self, task: Task, instance_name: str, *, force: bool = False, **options: Any) -> Task:
        """Create or update a dynamic instance and return it.

        An existing instance keeps the sooner of its stored and its new next run.
        Raises :class:`TaskLockedException` while the instance is running, unless
        ``force=True``, which overwrites it and its lease (the running one then cannot commit).
        """
        [instance] = await self.schedule_tasks(task, {instance_name: options}, force=force)
        return instance

    async def schedule_tasks(
        self, task: Task, instances: Mapping[str, Mapping[str, Any]], *, force: bool = False
    ) -> list[Task]:
        """Bulk :meth:`schedule_task`: ``{instance_name: options}``, written in as few round trips as possible.

        Every instance that is not running is written. If some were running (and
        ``force`` is false), :class:`TaskLockedException` is raised afterwards,
        naming them.
        """
        now = self.clock.now()
        concrete: list[Task] = []
        records: list[Record] = []
        # Bulk callers usually give many instances the same options: build and encode those once.
        previous: Mapping[str, Any] | None = None
        prototype: Task | None = None
        spec, first = "", now
        for instance_name, options in instances.items():
            if prototype is None or options != previous:
                prototype = instance = task.instantiate(instance_name, **dict(options))
                assert instance.schedule is not None
                spec, first, previous = instance.to_spec(), instance.schedule.first(now), options
            else:
                instance = copy.copy(prototype)
                instance.name = validate_instance_name(instance_name)
            parent, name = instance.storage_key()
            concrete.append(instance)
            records.append(Record(parent, name, spec, first))
        mode = RegisterMode.FORCE if force else RegisterMode.UPDATE
        locked: list[Task] = []
        for start in range(0, len(records), _REGISTER_CHUNK):
            chunk = records[start : start + _REGISTER_CHUNK]
            written = await self.repository.register(chunk, now=now, mode=mode)
            locked.extend(t for t, ok in zip(concrete[start : start + _REGISTER_CHUNK], written, strict=True) if not ok)
        for instance, record in zip(concrete, records, strict=True):
            self._planned(instance, record.scheduled_at)
        if locked:
            names = ", ".join(t.name for t in locked[:10]) + (" ..." if len(locked) > 10 else "")
            raise TaskLockedException(locked[0], f"{len(locked)} instance(s) of {task.name!r} are running: {names}")
        return concrete

    async def unschedule_task(self, task: Task, instance_name: str | None = None) -> None:
        """Remove a dynamic instance (pass the instance, or the template and the instance name)."""
        if not task.dynamic and task.template is None:
            raise ConfigurationError(f"{task!r} is a static task; only dynamic instances can be unscheduled")
        parent, name = self._key(task, instance_name)
        await self.repository.delete(parent, name)

    async def get_task(self, task: Task, instance_name: str | None = None) -> TaskState | None:
        """The stored state of a static task or a dynamic instance, or ``None``."""
        parent, name = self._key(task, instance_name)
        record = await self.repository.get(parent, name)
        if record is None:
            return None
        if not task.dynamic:
            return self._state(task, record)
        return self._state(self._decode(record, task.template or task), record)

    async def list_tasks(
        self, task: Task, limit: int | None = None, continuation_token: str | None = None
    ) -> ListTasksResponse:
        """Page through every instance of a dynamic task (order unspecified)."""
        if not task.dynamic:
            raise ValueError(f"{task!r} is not a dynamic task; only dynamic tasks can be listed")
        page_size = limit if limit is not None else self._batch_size
        if page_size < 1:
            raise ConfigurationError(f"invalid limit {limit!r}: must be >= 1")
        parents = task.parents() if task.partition_count is None else self._all_parents(task)
        index, inner = 0, None
        if continuation_token is not None:
            try:
                index, inner = json.loads(continuation_token)
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(f"invalid continuation_token {continuation_token!r}") from exc
        states: list[TaskState] = []
        while index < len(parents) and len(states) < page_size:
            records, inner = await self.repository.list_page(
                parents[index], limit=page_size - len(states), continuation=inner
            )
            for record in records:
                try:
                    states.append(self._state(self._decode(record, task), record))
                except RecordDecodeError as exc:
                    logger.error("Skipping undecodable record while listing: %s", exc)
            if inner is None:
                index += 1
        token = json.dumps([index, inner]) if index < len(parents) else None
        return ListTasksResponse(states, token)

    @staticmethod
    def _all_parents(task: Task) -> list[str]:
        assert task.partition_count is not None
        return [f"{task.name}/{shard}" for shard in range(task.partition_count)]

    @staticmethod
    def _key(task: Task, instance_name: str | None) -> tuple[str, str]:
        """The record of a static task, an instance, or a template's named instance."""
        if instance_name is None:
            if task.dynamic and task.template is None:
                raise ConfigurationError(f"{task!r} is a dynamic template: pass the instance name too")
            return task.storage_key()
        if not task.dynamic or task.template is not None:
            raise ConfigurationError(f"{task!r} is not a dynamic template; it has no instance {instance_name!r}")
        return task.instance_key(instance_name)

    def _state(self, task: Task, record: Record) -> TaskState:
        return TaskState(task, record.scheduled_at.astimezone(task.tz), record.locked_until, record.locked_by)

    def _decode(self, record: Record, template: Task | None = None) -> Task:
        template = template or self._template_of_parent.get(record.parent)
        if template is None:
            raise RecordDecodeError(f"record {record.parent}/{record.name} belongs to no known task")
        if record.spec is None:
            raise RecordDecodeError(f"record {record.parent}/{record.name} of a dynamic task has no spec")
        return template.from_spec(record.name, record.spec)

    # ---------------------------------------------------------------------------------------------
    # 2. The main loop
    # ---------------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown`: claim due work, run it, sleep until the next run or ``poll_interval``."""
        set_current_clock(self.clock)
        with self.clock.busy(), anyio.CancelScope() as self._run_scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._committer)
                await self._retrying("register static tasks", self._register_static)
                task_status.started()
                while not self._shutting_down:
                    started = time.perf_counter()
                    next_wake = await self._retrying("poll", partial(self._tick, tg))
                    self.last_tick = self.clock.now()
                    for listener in self.app.tick_listeners:
                        listener(self, time.perf_counter() - started)
                    if not self._shutting_down:
                        if next_wake > self.clock.now():
                            await self._sleep_until(next_wake)
                        else:
                            # More is due at once: stay busy (a virtual clock must not move), let others run.
                            await checkpoint()
                await self._drain()
                tg.cancel_scope.cancel()
        logger.info("Pyncette stopped")

    async def _register_static(self) -> None:
        now = self.clock.now()
        tasks = [task for task in self._static if task.enabled]
        records = [_fresh_static_record(task, now) for task in tasks]
        if records:
            created = await self.repository.register(records, now=now, mode=RegisterMode.CREATE)
            # A first estimate of a round trip, so even the first static run can be claimed ahead.
            self._claim_latency = self.clock.now() - now
            for task, record, new in zip(tasks, records, created, strict=True):
                if new:  # otherwise its schedule is learnt from storage on the first tick
                    self._static_due[task.name] = record.scheduled_at

    async def _tick(self, tg: TaskGroup) -> datetime:
        """Claim and start what is due and fits in the free slots; return when to look again.

        One tick claims at most one batch per dynamic parent, so a long backlog in one parent cannot
        starve static tasks or other parents: when a batch came back full, the next tick starts at once.
        Every claim reads the clock afresh, so a lease always runs for its full duration from its claim.
        """
        now = self.clock.now()
        next_wake = now + timedelta(seconds=self._poll_interval)
        self._starved = False
        for task in self._static:
            if not task.enabled or self._shutting_down:
                continue
            running_until = self._static_running.get(task.name)
            if running_until is not None and running_until > now:
                next_wake = min(next_wake, running_until)
                continue
            due = self._static_due.get(task.name)
            if due is not None and due - self._claim_lead() > now:
                next_wake = min(next_wake, due - self._claim_lead())
                continue
            if self._free_slots() < 1:
                self._starved = True
                break
            parent, name = task.storage_key()
            now = self.clock.now()
            # Claimed as of its due time, up to _claim_lead() early, so that the round trip is over when it
            # is due; the worker waits for the due time before starting it.
            claim_at = now if due is None else max(now, due)
            claimed = await self.repository.claim(
                parent, now=claim_at, limit=1, lease_until=claim_at + task.lease_duration, token=self._token()
            )
            # A slowly decaying peak: the lead must cover the slow claims, not the typical one.
            self._claim_latency = max(self.clock.now() - now, self._claim_latency * 0.9)
            if claimed:
                self._static_due[task.name] = None
                self._static_running[task.name] = claim_at + task.lease_duration
                self._start(tg, task, claimed[0])
                continue
            # Someone else ran it or holds it: learn when to look again instead of polling blindly.
            record = await self.repository.get(parent, name)
            if record is None:
                # Deleted behind our back (storage purged by hand): put it back as a fresh start would.
                logger.warning("The stored record of static task %r was missing; recreating it", task.name)
                record = _fresh_static_record(task, now)
                await self.repository.register([record], now=now, mode=RegisterMode.CREATE)
            due = max(record.scheduled_at, record.locked_until or record.scheduled_at)
            self._static_due[task.name] = due
            next_wake = min(next_wake, due)
        while self._dynamic_hints and self._dynamic_hints[0] <= now:
            heapq.heappop(self._dynamic_hints)
        for parent, template in self._template_of_parent.items():
            if not template.enabled or self._shutting_down:
                continue
            limit = min(self._free_slots(), self._batch_size)
            if limit < 1:
                self._starved = True
                break
            now = self.clock.now()
            claimed = await self.repository.claim(
                parent, now=now, limit=limit, lease_until=now + template.lease_duration, token=self._token()
            )
            for record in claimed:
                try:
                    instance = self._decode(record, template)
                except RecordDecodeError as exc:
                    logger.error("Skipping undecodable record (left leased until it expires): %s", exc)
                    continue
                self._start(tg, instance, record)
            if len(claimed) == limit:
                if self._free_slots() > 0:
                    next_wake = now  # more may be due: look again right away
                else:
                    self._starved = True  # more may be due: look again when a slot frees up
        if self._dynamic_hints:
            next_wake = min(next_wake, self._dynamic_hints[0])
        return max(next_wake, now)

    def _planned(self, task: Task, next_at: datetime | None) -> None:
        """Note a committed next run, and wake the loop if it is due before the loop would wake."""
        if next_at is None:
            if task.template is None:
                self._static_due[task.name] = None
            return
        if task.template is None:
            self._static_due[task.name] = next_at
            next_at -= self._claim_lead()
        elif len(self._dynamic_hints) < _MAX_HINTS:
            heapq.heappush(self._dynamic_hints, next_at)
        if self._next_wake is not None and next_at < self._next_wake:
            self._wakeup()

    def _claim_lead(self) -> timedelta:
        """How far ahead of its due time a static run is claimed: two slow claims per static task.

        Static tasks due together are claimed one after another, so each needs the time of all of them.
        """
        return min(2 * self._claim_latency * len(self._static), _MAX_CLAIM_LEAD)

    def _free_slots(self) -> int:
        """How many runs the loop may claim now.

        ``concurrency_limit`` bounds the task bodies running at once. Runs waiting only for their commit
        (at most another ``concurrency_limit``) do not take a slot, so the next claim overlaps the last commit.
        """
        limit = self._concurrency_limit
        return min(limit - (self._running - self._committing), 2 * limit - self._running)

    def _slot_freed(self) -> None:
        if self._starved:
            self._starved = False
            self._wakeup()

    @staticmethod
    def _token() -> str:
        return uuid.uuid4().hex

    async def _sleep_until(self, deadline: datetime) -> None:
        delay = (deadline - self.clock.now()).total_seconds()
        with anyio.CancelScope() as scope:
            self._wake_scope = scope
            self._next_wake = deadline
            if self._wake_pending:
                scope.cancel()
            await self.clock.sleep(delay)
        self._next_wake = None
        self._wake_scope = None
        self._wake_pending = False
        if self._wake_held:
            self._wake_held = False
            self.clock.release()

    def _wakeup(self) -> None:
        """Cut the loop's current sleep short (or the next one, if it is not sleeping)."""
        scope = self._wake_scope
        if scope is None:
            self._wake_pending = True
        elif not scope.cancel_called:
            # Count the loop as busy from this moment, so a virtual clock cannot move before it runs.
            self.clock.hold()
            self._wake_held = True
            scope.cancel()

    async def _drain(self) -> None:
        """Wait for running tasks; their commits land before they count as finished."""
        if self._running:
            self._drained = anyio.Event()
            self.clock.release()  # waiting for tasks is not work: a virtual clock may move meanwhile
            try:
                await self._drained.wait()
            finally:
                self.clock.hold()

    # ---------------------------------------------------------------------------------------------
    # 3. One run
    # ---------------------------------------------------------------------------------------------

    def _start(self, tg: TaskGroup, task: Task, record: Record) -> None:
        """Queue a claimed run for the worker pool (cheaper than a task per run)."""
        self._running += 1
        self.clock.hold()
        self._queue.append((task, record))
        if not self._worker_waking:
            self._wake_worker(tg)

    def _wake_worker(self, tg: TaskGroup) -> None:
        """Get one more worker to the queue: an idle one, or a new one.

        Only one wake-up is outstanding at a time: the woken worker wakes the next when it takes a run and
        more are queued. Runs that never wait are then all done by one worker, and runs that do wait still
        each get a worker of their own, one event-loop step apart.
        """
        self._worker_waking = True
        if self._idle_workers:
            self._idle_workers.pop().set()
        else:
            tg.start_soon(self._worker, tg)

    async def _worker(self, tg: TaskGroup) -> None:
        while True:
            self._worker_waking = False
            while self._queue:
                task, record = self._queue.popleft()
                if self._queue and not self._worker_waking:
                    self._wake_worker(tg)  # takes the next run if this one waits
                try:
                    await self._execute(task, record)
                except Exception:  # a bug, or a schedule that cannot compute its next run: never fatal
                    logger.exception("Internal error while finishing a run")
            wake = anyio.Event()
            self._idle_workers.append(wake)
            await wake.wait()

    async def _execute(self, task: Task, record: Record) -> None:
        """One run: invoke the task, then hand its outcome to the committer (or finish it here)."""
        assert record.locked_by is not None
        lease = Lease(record.parent, record.name, record.locked_by)
        early = (record.scheduled_at - self.clock.now()).total_seconds()
        if early > 0:  # a static run claimed ahead of its due time (see _tick)
            await self.clock.sleep(early)
        lost = False
        handed_over = False

        async def heartbeat() -> None:
            nonlocal lost
            if task.execution_mode is ExecutionMode.AT_MOST_ONCE:
                return
            extended = await self.repository.extend(lease, lease_until=self.clock.now() + task.lease_duration)
            if not extended:
                lost = True
                raise LeaseLostException(task)

        context = Context(
            app_context=self,
            task=task,
            scheduled_at=record.scheduled_at.astimezone(task.tz),
            args=task.extra_args,
            _heartbeat=heartbeat,
            **self._values,
        )
        try:
            if task.execution_mode is ExecutionMode.AT_MOST_ONCE:
                next_at = self._next_run(task, record.scheduled_at)
                if not await self._finish(lease, next_at):
                    logger.warning("Not running %r: its lease was lost before it started", task)
                    return
                self._planned(task, next_at)
                try:
                    await self._invoke(context)
                except Exception:
                    logger.exception("Task %r failed (at-most-once: not retried)", task)
                return
            unlock = False
            try:
                await self._invoke(context)
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
            # The committer finishes the run once its commit (or unlock) has landed; the slot stays
            # taken until then, but this worker can move on.
            next_at = None if unlock else self._next_run(task, record.scheduled_at)
            self._submit(_Pending(lease, next_at, unlock, task))
            self.clock.release()  # the committer holds the clock for this run until it is stored
            handed_over = True
            self._committing += 1
            self._slot_freed()
        finally:
            if not handed_over:
                self._run_done(task)

    def _run_done(self, task: Task) -> None:
        self._running -= 1
        if self._running == 0:
            self._drained.set()
        if task.template is None:
            self._static_running.pop(task.name, None)
        self._slot_freed()
        self.clock.release()

    async def _invoke(self, context: Context) -> None:
        middlewares = self._middlewares
        if not middlewares:
            await context.task.func(context)
            return

        async def call(index: int) -> None:
            if index == len(middlewares):
                await context.task.func(context)
            else:
                await middlewares[index](context, lambda: call(index + 1))

        await call(0)

    def _next_run(self, task: Task, scheduled_at: datetime) -> datetime | None:
        assert task.schedule is not None
        if task.fast_forward:
            return task.schedule.fast_forward(scheduled_at, self.clock.now())
        return task.schedule.next_after(scheduled_at)

    # ---------------------------------------------------------------------------------------------
    # 4. The committer: batches commits and unlocks
    # ---------------------------------------------------------------------------------------------

    def _submit(self, item: _Pending) -> None:
        """Queue a commit or unlock for the committer, which holds the clock while it has work."""
        self._pending.append(item)
        if not self._commit_hold:
            self._commit_hold = True
            self.clock.hold()
        self._pending_event.set()

    async def _finish(self, lease: Lease, next_at: datetime | None) -> bool:
        """Commit and wait until it has landed; ``False`` if the lease was lost (at-most-once runs).

        The waiting run hands its clock hold to the committer, which hands one back when it is done.
        """
        item = _Pending(lease, next_at, False, None, anyio.Event())
        self._submit(item)
        self.clock.release()
        assert item.done is not None
        try:
            await item.done.wait()
        except BaseException:
            if not item.done.is_set():
                self.clock.hold()
            raise
        return item.result

    async def _committer(self) -> None:
        while True:
            await self._pending_event.wait()
            self._pending_event = anyio.Event()
            batch, self._pending = self._pending, []
            commits = [p for p in batch if not p.unlock]
            unlocks = [p for p in batch if p.unlock]
            if commits:
                self._resolve(commits, await self._commit(commits))
            if unlocks:
                leases = [p.lease for p in unlocks]
                self._resolve(unlocks, await self._retrying("unlock", partial(self.repository.unlock, leases)))
            if not self._pending:
                self._commit_hold = False
                self.clock.release()

    async def _commit(self, items: list[_Pending]) -> list[bool]:
        """Commit a batch, retrying failures; after a retry, tell leases lost from writes that had landed.

        A call can fail after storage applied it (the connection dropped before the answer), and its retry
        then finds those leases gone. For runs that already happened, a record that shows the outcome and
        is not leased means the write was ours. At-most-once commits (``done`` set) stay strict: there a
        false "committed" could run a task that another process has already taken over.
        """
        completions = [Completion(p.lease.parent, p.lease.name, p.lease.token, p.next_at) for p in items]
        failures = 0

        async def attempt() -> list[bool]:
            nonlocal failures
            try:
                return await self.repository.commit(completions)
            except Exception:
                failures += 1
                raise

        results = await self._retrying("commit", attempt)
        for i, (item, completion) in enumerate(zip(items, completions, strict=True)):
            if failures and not results[i] and item.done is None:
                get = partial(self.repository.get, completion.parent, completion.name)
                results[i] = _shows(await self._retrying("verify commit", get), completion)
        return results

    def _resolve(self, items: list[_Pending], results: list[bool]) -> None:
        for item, ok in zip(items, results, strict=True):
            item.result = ok
            if item.done is not None:
                self.clock.hold()  # handed back to the waiting run
                item.done.set()
                continue
            task = item.task
            assert task is not None
            if item.unlock:
                if task.template is None:
                    self._static_due[task.name] = self.clock.now() + timedelta(seconds=self._poll_interval)
            elif ok:
                self._planned(task, item.next_at)
            else:
                logger.warning("Task %r ran but its lease had been lost; its result was not committed", task)
            self.clock.hold()  # taken back from the committer, released by _run_done
            self._committing -= 1
            self._run_done(task)

    # ---------------------------------------------------------------------------------------------
    # 5. Retries
    # ---------------------------------------------------------------------------------------------

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Call storage until it succeeds, logging each failure and backing off exponentially."""
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                attempt += 1
                delay = min(_MAX_BACKOFF, 0.1 * math.pow(2, min(attempt, 20)))
                logger.warning("Storage call %r failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc)
                await self.clock.sleep(delay)  # every caller holds the clock (see _finish)


def _fresh_static_record(task: Task, now: datetime) -> Record:
    """A static task's record as a first start writes it: due at its schedule's first run after ``now``."""
    parent, name = task.storage_key()
    assert task.schedule is not None
    return Record(parent, name, None, task.schedule.first(now))


def _shows(record: Record | None, completion: Completion) -> bool:
    """Whether ``record`` shows ``completion`` applied: deleted, or rescheduled to its next run and unleased."""
    if completion.next_at is None:
        return record is None
    return record is not None and record.locked_by is None and record.scheduled_at == completion.next_at


def validate_context_names(names: Iterable[str]) -> None:
    """Refuse fixture or context names that clash with the context's own attributes."""
    for name in names:
        if name in RESERVED_CONTEXT_NAMES or name.startswith("_"):
            raise ConfigurationError(f"context name {name!r} is reserved")


__all__ = ["PyncetteContext"]
