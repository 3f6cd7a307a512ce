"""The control plane's API on the in-memory backend: partitioned templates, bad input, a backend without it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pyncette import Context, Pyncette
from pyncette.abc import PauseRule
from pyncette.errors import ConfigurationError
from pyncette.memory import MemoryRepository
from pyncette.testing import VirtualClock, running, shared_repository

START = datetime(2030, 1, 1, tzinfo=timezone.utc)

pytestmark = pytest.mark.anyio


class WithoutControl(MemoryRepository):
    """A third-party backend written before the control plane existed: it has none of its methods."""

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        raise NotImplementedError

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        raise NotImplementedError

    async def pauses(self, parent: str) -> list[PauseRule]:
        raise NotImplementedError

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        raise NotImplementedError

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        raise NotImplementedError


async def test_pausing_a_partitioned_template_holds_every_partition() -> None:
    app = Pyncette(poll_interval=timedelta(seconds=10))
    clock = VirtualClock(START)
    runs: list[str] = []

    @app.partitioned_task(partition_count=4, interval=timedelta(minutes=1))
    async def sharded(context: Context) -> None:
        runs.append(context.task.name)

    names = [f"tenant-{n}" for n in range(20)] + [f"other-{n}" for n in range(4)]
    async with app.create(clock=clock) as ctx, running(ctx):
        await ctx.schedule_tasks(sharded, {name: {} for name in names})
        assert len({sharded.instance_key(name)[0] for name in names}) == 4  # spread over the partitions
        assert await ctx.pause_task(sharded) == len(names)
        await clock.advance(timedelta(minutes=3))
        assert runs == []
        assert [p.scope for p in await ctx.list_pauses(sharded)] == ["task"]
        assert await ctx.resume_task(sharded)
        assert await ctx.pause_task(sharded, prefix="tenant-") == 20
        runs.clear()
        await clock.advance(timedelta(minutes=1))
        assert sorted(set(runs)) == sorted(f"other-{n}" for n in range(4))
        # One instance of a partitioned template, by name: its own partition is asked.
        assert await ctx.run_task_now(sharded, "other-1") == "queued"
        described = await ctx.describe_task(sharded, "tenant-3")
        assert described is not None and described.paused is not None and described.paused.match == "tenant-"


async def test_bad_arguments_are_refused_before_storage_is_touched() -> None:
    app = Pyncette()

    @app.task(interval=timedelta(minutes=1))
    async def tick(context: Context) -> None:
        pass

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    async with app.create(clock=VirtualClock(START)) as ctx:
        cases: list[tuple[Any, str]] = [
            (ctx.pause_task(tick, "x"), "static task"),
            (ctx.pause_task(job, "x", prefix="y"), "not both"),
            (ctx.pause_task(job, prefix=""), "invalid prefix ''"),
            (ctx.pause_task(job, note="n" * 501), "at most 500"),
            (ctx.pause_task(job, by=42), "invalid by 42"),  # type: ignore[arg-type]
            (ctx.run_task_now(job), "pass the instance name"),
            (ctx.run_task_now(tick, "x"), "static task"),
            (ctx.run_task_now(job, "missing"), "is not stored"),
            (ctx.task_history(job), "pass the instance name"),
        ]
        for call, message in cases:
            with pytest.raises(ConfigurationError, match=message):
                await call


async def test_a_backend_without_the_control_plane_says_so() -> None:
    app = Pyncette(repository_factory=shared_repository(WithoutControl()))

    @app.task(interval=timedelta(minutes=1))
    async def tick(context: Context) -> None:
        pass

    async with app.create(clock=VirtualClock(START)) as ctx, running(ctx):
        for call in (ctx.pause_task(tick), ctx.resume_task(tick), ctx.list_pauses(tick), ctx.run_task_now(tick)):
            with pytest.raises(ConfigurationError, match="does not declare the 'control' capability"):
                await call
        with pytest.raises(ConfigurationError, match="control"):
            await ctx.prune()
        described = await ctx.describe_task(tick)  # everything else still works
        assert described is not None and described.paused is None


async def test_run_now_while_due_or_paused() -> None:
    app = Pyncette(poll_interval=timedelta(seconds=10))
    clock = VirtualClock(START)
    runs: list[float] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs.append((clock.now() - START).total_seconds())

    async with app.create(clock=clock) as ctx:
        await ctx.schedule_task(job, "due", execute_at=START)
        assert await ctx.run_task_now(job, "due") == "due"  # already due: no second run is queued
        await ctx.schedule_task(job, "later", execute_at=START + timedelta(hours=1))
        await ctx.pause_task(job, "later")
        assert await ctx.run_task_now(job, "later") == "queued"
        async with running(ctx):
            await clock.advance(timedelta(minutes=1))
            assert runs == [0]  # the paused instance's triggered run waits
            await ctx.resume_task(job, "later")
            await clock.advance(timedelta(seconds=1))
            assert runs == [0, 60]
