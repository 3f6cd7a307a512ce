"""Fault injection: a repository wrapper that loses answers, fails calls and adds delays, and the suite that runs
every backend under it.

:class:`FaultyRepository` wraps any repository (``app.use_repository_wrapper``) and, driven by a seeded
random generator so that a failure can be replayed, makes each call of a chosen operation:

* fail *before* it reaches storage (nothing happened; :class:`~pyncette.errors.BackendError`);
* lose its *answer* after storage applied it (everything happened; :class:`~pyncette.errors.BackendError`),
  as when a connection drops between the write and the reply;
* take longer (a real-time delay).

:class:`FaultSuite` checks that at-least-once and at-most-once runs lose nothing and double nothing while
claims, commits, unlocks and registrations lose their answers.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

import anyio
import pytest

from pyncette import Context, ExecutionMode, FailureMode, PyncetteContext, Task
from pyncette.abc import Completion, Lease, Record, RegisterMode, Repository
from pyncette.errors import BackendError

from .base import ConformanceBase
from .behaviour import START, AppFactory

T = TypeVar("T")

OPERATIONS = ("register", "claim", "commit", "unlock", "extend", "delete", "get", "list_page")


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject, per operation, with what probability (0 to 1)."""

    seed: int = 0
    #: The call is applied, then its answer is lost.
    lose_answer: Mapping[str, float] = field(default_factory=dict)
    #: The call fails before it reaches storage.
    fail_before: Mapping[str, float] = field(default_factory=dict)
    #: The first N calls of an operation lose their answer whatever the odds (so that each fault surely happens).
    lose_first_answers: Mapping[str, int] = field(default_factory=dict)
    #: Each call waits a random real time up to this many seconds before it is made.
    max_delay: float = 0.0


class FaultyRepository(Repository):
    """A repository that injects the faults of a :class:`FaultPlan` into the one it wraps."""

    def __init__(self, inner: Repository, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self._random = random.Random(plan.seed)
        self._calls: Counter[str] = Counter()
        #: (operation, "lost answer" | "failed before") -> how many were injected.
        self.injected: Counter[tuple[str, str]] = Counter()

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._random.random() < self.plan.fail_before.get(operation, 0.0):
            self.injected[operation, "failed before"] += 1
            raise BackendError(f"injected fault: {operation} failed before reaching storage")
        if self.plan.max_delay:
            await anyio.sleep(self._random.uniform(0, self.plan.max_delay))
        result = await call()
        self._calls[operation] += 1
        surely = self._calls[operation] <= self.plan.lose_first_answers.get(operation, 0)
        if surely or self._random.random() < self.plan.lose_answer.get(operation, 0.0):
            self.injected[operation, "lost answer"] += 1
            raise BackendError(f"injected fault: the answer of {operation} was lost after it was applied")
        return result

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        return await self._call("register", lambda: self.inner.register(records, now=now, mode=mode))

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        return await self._call(
            "claim", lambda: self.inner.claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)
        )

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        return await self._call("commit", lambda: self.inner.commit(completions))

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        return await self._call("unlock", lambda: self.inner.unlock(leases))

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        return await self._call("extend", lambda: self.inner.extend(lease, lease_until=lease_until))

    async def delete(self, parent: str, name: str) -> bool:
        return await self._call("delete", lambda: self.inner.delete(parent, name))

    async def delete_many(self, keys: Sequence[tuple[str, str]]) -> list[bool]:
        return await self._call("delete", lambda: self.inner.delete_many(keys))

    async def get(self, parent: str, name: str) -> Record | None:
        return await self._call("get", lambda: self.inner.get(parent, name))

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        return await self._call(
            "list_page", lambda: self.inner.list_page(parent, limit=limit, continuation=continuation)
        )

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        await self.inner.write_raw_spec(parent, name, raw)

    async def corrupt(self, parent: str, name: str) -> None:
        await self.inner.corrupt(parent, name)

    async def kill_connections(self) -> int:
        return await self.inner.kill_connections()


async def schedule_until_it_lands(ctx: PyncetteContext, task: Task, instances: Mapping[str, Mapping[str, Any]]) -> int:
    """Register instances the way an application retries a failed call; returns how many calls failed."""
    failures = 0
    while True:
        try:
            await ctx.schedule_tasks(task, instances)
            return failures
        except BackendError:
            failures += 1
            assert failures < 50, "registering never succeeded"


class FaultSuite(ConformanceBase):
    """Runs lose nothing and double nothing while storage calls lose their answers or fail."""

    #: Once-off instances per template; a slow emulator may lower it.
    fault_instances: ClassVar[int] = 120
    LEASE: ClassVar[timedelta] = timedelta(seconds=10)

    @pytest.mark.parametrize("seed", [1, 2])
    async def test_lost_answers_lose_nothing_and_double_nothing(self, apps: AppFactory, seed: int) -> None:
        plan = FaultPlan(
            seed=seed,
            lose_answer={"register": 0.2, "claim": 0.2, "commit": 0.2, "unlock": 0.3, "get": 0.1},
            fail_before={"register": 0.1, "claim": 0.1, "commit": 0.1, "unlock": 0.1, "get": 0.1},
            lose_first_answers={"register": 1, "claim": 1, "commit": 1, "unlock": 1},
        )
        wrappers: list[FaultyRepository] = []
        app = apps.app(poll_interval=timedelta(seconds=1), batch_size=25)

        def wrap(repository: Repository) -> Repository:
            wrappers.append(FaultyRepository(repository, plan))
            return wrappers[-1]

        app.use_repository_wrapper(wrap)
        ran: dict[str, Counter[str]] = {"least": Counter(), "most": Counter(), "unlock": Counter()}
        attempts: Counter[str] = Counter()
        ticks: list[datetime] = []

        @app.dynamic_task(lease_duration=self.LEASE)
        async def least(context: Context) -> None:
            ran["least"][context.task.name] += 1

        @app.dynamic_task(lease_duration=self.LEASE, execution_mode=ExecutionMode.AT_MOST_ONCE)
        async def most(context: Context) -> None:
            ran["most"][context.task.name] += 1

        @app.dynamic_task(lease_duration=self.LEASE, failure_mode=FailureMode.UNLOCK)
        async def flaky(context: Context) -> None:
            attempts[context.task.name] += 1
            if attempts[context.task.name] == 1:
                raise RuntimeError("first attempt fails (expected)")
            ran["unlock"][context.task.name] += 1

        @app.task(interval=timedelta(seconds=2), lease_duration=self.LEASE)
        async def ticker(context: Context) -> None:
            ticks.append(context.scheduled_at)

        names = [f"i{n}" for n in range(self.fault_instances)]
        stopped = anyio.Event()

        async def run(ctx: PyncetteContext) -> None:
            await ctx.run()
            stopped.set()

        async with app.create(clock=apps.clock) as ctx:
            for task in (least, most, flaky):
                for start in range(0, len(names), 10):  # many small registrations: some lose their answer
                    chunk = names[start : start + 10]
                    await schedule_until_it_lands(ctx, task, {name: {"execute_at": START} for name in chunk})
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, ctx)  # not waiting for the start: registering may need to back off in time
                for _ in range(180):
                    await apps.clock.advance(timedelta(seconds=1))
                    if all(len(counts) == len(names) for counts in ran.values()):
                        break
                await apps.clock.advance(self.LEASE * 3)  # room for a doubled run to show up
                ctx.shutdown()
                for _ in range(600):  # commits may still be backing off: let time pass until they land
                    if stopped.is_set():
                        break
                    await apps.clock.advance(timedelta(seconds=1))
            left = {task.name: len((await ctx.list_tasks(task)).tasks) for task in (least, most, flaky)}
        injected = sum((w.injected for w in wrappers), Counter())
        assert injected[("claim", "lost answer")] and injected[("commit", "lost answer")], injected
        assert injected[("unlock", "lost answer")] and injected[("register", "lost answer")], injected
        for mode, counts in ran.items():
            assert set(counts) == set(names), f"{mode}: {len(set(names) - set(counts))} instance(s) never ran"
            doubled = {name: n for name, n in counts.items() if n > 1}
            assert not doubled, f"{mode}: ran more than once: {doubled}"
        assert left == {"least": 0, "most": 0, "flaky": 0}, left
        assert len(ticks) == len(set(ticks)), "the static task ran twice for one scheduled time"
        assert ticks, "the static task never ran"


__all__ = ["FaultPlan", "FaultSuite", "FaultyRepository", "schedule_until_it_lands"]
