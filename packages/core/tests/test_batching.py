"""Concurrent ``schedule_task`` / ``unschedule_task`` calls share round trips; each caller gets its own outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import anyio
import pytest

from pyncette import Context, Pyncette
from pyncette.abc import Record, RegisterMode
from pyncette.errors import BackendError, TaskLockedException
from pyncette.memory import MemoryRepository
from pyncette.testing import VirtualClock, shared_repository

START = datetime(2030, 1, 1, tzinfo=timezone.utc)

pytestmark = pytest.mark.anyio


class SlowRegister(MemoryRepository):
    """Each register or delete_many call takes a real moment (a round trip) and is recorded; names in
    ``failing`` fail it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.deletes: list[int] = []
        self.failing: set[str] = set()
        #: Set when a call reaches storage (replace it to wait for the next one).
        self.reached = anyio.Event()
        #: When given, calls wait for it to be set before their round trip (the test decides when they end).
        self.gate: anyio.Event | None = None

    async def _round_trip(self) -> None:
        self.reached.set()
        if self.gate is not None:
            await self.gate.wait()
        await anyio.sleep(0.01)

    async def delete_many(self, keys: Sequence[tuple[str, str]]) -> list[bool]:
        self.deletes.append(len(keys))
        await self._round_trip()
        if any(name in self.failing for _, name in keys):
            raise BackendError("storage refused the batch")
        return await super().delete_many(keys)

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        self.calls.append(len(records))
        await self._round_trip()
        if any(r.name in self.failing for r in records):
            raise BackendError("storage refused the batch")
        return await super().register(records, now=now, mode=mode)


async def test_concurrent_calls_share_round_trips_and_get_their_own_instances() -> None:
    repository = SlowRegister()
    app = Pyncette(repository_factory=shared_repository(repository))

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    results: dict[str, str] = {}
    async with app.create(clock=VirtualClock(START)) as ctx:
        await ctx.schedule_task(job, "alone", interval=timedelta(minutes=1))
        assert repository.calls == [1]  # alone: sent at once, by itself

        async def one(n: int) -> None:
            instance = await ctx.schedule_task(job, f"i{n}", interval=timedelta(minutes=n + 1))
            results[instance.name] = str(instance.interval)

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(one, n)
        assert sorted(results) == sorted(f"i{n}" for n in range(50))
        assert results["i9"] == "0:10:00"
        assert sum(repository.calls[1:]) == 50
        assert len(repository.calls) <= 4  # the first call, then what queued behind it
        for n in (0, 49):
            state = await ctx.get_task(job, f"i{n}")
            assert state is not None and state.task.interval == timedelta(minutes=n + 1)


async def test_each_caller_gets_its_own_error() -> None:
    repository = SlowRegister()
    app = Pyncette(repository_factory=shared_repository(repository))

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    outcomes: dict[str, str] = {}
    async with app.create(clock=VirtualClock(START)) as ctx:
        await ctx.schedule_task(job, "busy", interval=timedelta(minutes=1))
        [record] = await repository.claim(
            "job", now=START + timedelta(minutes=1), limit=1, lease_until=START + timedelta(hours=1), token="t"
        )
        repository.failing.add("bad")

        async def one(name: str, delay: float) -> None:
            await anyio.sleep(delay)
            try:
                await ctx.schedule_task(job, name, interval=timedelta(minutes=2))
                outcomes[name] = "ok"
            except (BackendError, TaskLockedException) as exc:
                outcomes[name] = type(exc).__name__

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "first", 0)
            for name in ["bad", "with-bad", "busy"]:
                tg.start_soon(one, name, 0.001)  # queued behind "first": sent together
        assert record.locked_by == "t"
        # "bad" failed the batch it shared with "with-bad" (and "busy"); "busy" alone would be locked.
        assert outcomes["first"] == "ok"
        assert outcomes["bad"] == outcomes["with-bad"] == "BackendError"
        repository.failing.clear()
        with pytest.raises(TaskLockedException):
            await ctx.schedule_task(job, "busy", interval=timedelta(minutes=2))


async def test_a_cancelled_caller_does_not_strand_the_calls_queued_with_it() -> None:
    repository = SlowRegister()
    app = Pyncette(repository_factory=shared_repository(repository))

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    async with app.create(clock=VirtualClock(START)) as ctx:

        async def schedule(name: str) -> None:
            await ctx.schedule_task(job, name, interval=timedelta(minutes=1))

        given_up = anyio.CancelScope()

        async def leader() -> None:
            with given_up:
                await schedule("leader")

        repository.gate = anyio.Event()
        with anyio.fail_after(5):  # a stranded queue hangs instead
            async with anyio.create_task_group() as tg:
                tg.start_soon(schedule, "first")
                await repository.reached.wait()  # "first" is in flight: the next calls queue behind it
                tg.start_soon(leader)  # the first call of the queued group: it is to send the group
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(schedule, "member")
                await anyio.wait_all_tasks_blocked()
                given_up.cancel()  # the leader's caller gives up while it waits for its turn
                await anyio.wait_all_tasks_blocked()
                repository.gate.set()
        assert repository.calls == [1, 2]
        for name in ("first", "leader", "member"):
            assert await ctx.get_task(job, name) is not None


async def test_concurrent_unschedules_share_round_trips() -> None:
    repository = SlowRegister()
    app = Pyncette(repository_factory=shared_repository(repository))

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    outcomes: dict[str, str] = {}
    async with app.create(clock=VirtualClock(START)) as ctx:
        await ctx.schedule_tasks(job, {f"i{n}": {"interval": timedelta(minutes=1)} for n in range(40)})
        await ctx.unschedule_task(job, "i0")
        assert repository.deletes == [1]  # alone: sent at once, by itself
        repository.failing.add("i7")

        async def one(n: int) -> None:
            try:
                await ctx.unschedule_task(job, f"i{n}")
                outcomes[f"i{n}"] = "ok"
            except BackendError:
                outcomes[f"i{n}"] = "error"

        repository.reached, repository.gate = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 1)
            await repository.reached.wait()  # i1 is in flight
            for n in range(2, 40):
                tg.start_soon(one, n)  # queued behind i1, sent together
            await anyio.wait_all_tasks_blocked()
            repository.gate.set()
        assert repository.deletes == [1, 1, 38]
        assert outcomes["i1"] == "ok" and outcomes["i2"] == outcomes["i7"] == "error"
        assert await ctx.get_task(job, "i1") is None
        assert await ctx.get_task(job, "i2") is not None  # the refused batch deleted nothing
