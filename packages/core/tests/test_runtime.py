"""The scheduler loop and the context API, beyond what the conformance suite covers."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from trio.testing import MockClock

import pyncette
from pyncette import Context, Pyncette, PyncetteContext
from pyncette.abc import Completion, Lease, Record, RegisterMode
from pyncette.clock import Clock, current_clock
from pyncette.errors import BackendError, TaskLockedException
from pyncette.memory import MemoryRepository
from pyncette.testing import VirtualClock, running, shared_repository

pytestmark = pytest.mark.anyio

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
S = timedelta(seconds=1)


def offsets(times: Sequence[datetime]) -> list[float]:
    return [(t - START).total_seconds() for t in times]


class CountingRepository(MemoryRepository):
    """The in-memory repository, counting calls and failing the first few calls of chosen methods."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        super().__init__()
        self.failures = Counter(failures or {})
        self.calls: Counter[str] = Counter()

    def _call(self, method: str) -> None:
        self.calls[method] += 1
        if self.failures[method] > 0:
            self.failures[method] -= 1
            raise BackendError(f"simulated outage in {method}")

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        self._call("register")
        return await super().register(records, now=now, mode=mode)

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        self._call("claim")
        return await super().claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        self._call("commit")
        return await super().commit(completions)

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        self._call("unlock")
        return await super().unlock(leases)

    async def get(self, parent: str, name: str) -> Record | None:
        self._call("get")
        return await super().get(parent, name)


@contextlib.asynccontextmanager
async def in_background(ctx: PyncetteContext) -> AsyncIterator[PyncetteContext]:
    """Like ``running``, without waiting for ``run()`` to start (its start-up may need the clock to move)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.run)
        try:
            yield ctx
        finally:
            ctx.shutdown()


@contextlib.asynccontextmanager
async def started(app: Pyncette, clock: VirtualClock) -> AsyncIterator[PyncetteContext]:
    async with app.create(clock=clock) as ctx, running(ctx):
        yield ctx


# -- the loop's timing ------------------------------------------------------------------------------------


async def test_loop_sleeps_until_the_next_static_run() -> None:
    repository = CountingRepository()
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(hours=1))
    clock = VirtualClock(START)
    starts: list[datetime] = []

    @app.task(schedule="17 3 * * *")
    async def nightly(context: Context) -> None:
        starts.append(clock.now())

    @app.task(schedule="* * * * * 42")
    async def odd_second(context: Context) -> None:
        starts.append(clock.now())

    async with started(app, clock):
        await clock.advance(timedelta(minutes=2))
        assert offsets(starts) == [42, 102]
        starts.clear()
        odd_second.enabled = False  # takes effect on the next tick
        await clock.advance(timedelta(hours=5))
    assert starts == [datetime(2030, 1, 1, 3, 17, tzinfo=timezone.utc)]
    # Static state is known from this process's own commits: a task that is not due is looked at once per
    # poll_interval (for runs triggered elsewhere), not on every tick: 3 runs, 5 hourly looks, a few first claims.
    assert repository.calls["claim"] <= 11


async def test_static_task_whose_record_was_deleted_is_recreated(caplog: pytest.LogCaptureFixture) -> None:
    repository = MemoryRepository()
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=5))
    clock = VirtualClock(START)
    starts: list[datetime] = []

    @app.task(interval=timedelta(seconds=10))
    async def job(context: Context) -> None:
        starts.append(clock.now())

    with caplog.at_level(logging.WARNING, logger="pyncette"):
        async with started(app, clock):
            await clock.advance(timedelta(seconds=10))
            assert offsets(starts) == [10]
            # storage purged by hand while the app runs
            assert await repository.delete(*job.storage_key())
            await clock.advance(timedelta(seconds=60))
    # found missing when it came due at 20 s, recreated as on a fresh start: due one interval later
    assert offsets(starts) == [10, 30, 40, 50, 60, 70]
    assert "static task 'job' was missing; recreating it" in caplog.text


async def test_task_disabled_before_run_never_runs() -> None:
    app = Pyncette()
    clock = VirtualClock(START)
    seen: list[str] = []

    @app.task(interval=S)
    async def off(context: Context) -> None:
        seen.append("off")

    off.enabled = False
    async with started(app, clock) as ctx:
        await clock.advance(10 * S)
        assert await ctx.get_task(off) is None  # never registered
    assert seen == []


class PollingOnly(MemoryRepository):
    """The in-memory store without its wake-ups: other apps find new work by polling only."""

    def wakeups(self) -> None:
        return None


async def test_dynamic_instance_scheduled_elsewhere_is_found_within_poll_interval() -> None:
    repository = PollingOnly()
    poll = timedelta(seconds=10)
    runner = Pyncette(repository_factory=shared_repository(repository), poll_interval=poll)
    other = Pyncette(repository_factory=shared_repository(repository), poll_interval=poll)
    clock = VirtualClock(START)
    starts: dict[str, datetime] = {}

    @runner.dynamic_task(name="job")
    async def job(context: Context) -> None:
        starts[context.task.name] = clock.now()

    @other.dynamic_task(name="job")
    async def job_elsewhere(context: Context) -> None:
        raise AssertionError("the scheduling app does not run")

    async with started(runner, clock) as ctx, other.create(clock=clock) as remote:
        await clock.advance(3 * S)
        await remote.schedule_task(job_elsewhere, "remote", execute_at=clock.now())
        await clock.advance(S)
        assert starts == {}  # the runner does not know yet
        await clock.advance(poll)
        assert START + 3 * S < starts["remote"] <= START + 3 * S + poll
        # scheduled through the running app itself: it wakes at once
        await clock.advance(3 * S)
        await ctx.schedule_task(job, "local", execute_at=clock.now())
        await clock.advance(0)
        assert starts["local"] == clock.now()


async def test_dynamic_interval_shorter_than_poll_interval_is_kept() -> None:
    app = Pyncette(poll_interval=timedelta(minutes=10))
    clock = VirtualClock(START)
    starts: list[datetime] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        starts.append(clock.now())

    async with started(app, clock) as ctx:
        await ctx.schedule_task(job, "x", interval=timedelta(seconds=3))
        await clock.advance(10 * S)
    assert offsets(starts) == [3, 6, 9]


async def test_last_tick_advances() -> None:
    app = Pyncette(poll_interval=timedelta(seconds=10))
    clock = VirtualClock(START)
    async with app.create(clock=clock) as ctx:
        assert ctx.last_tick is None
        async with running(ctx):
            await clock.advance(0)
            assert ctx.last_tick == START
            await clock.advance(25 * S)
            assert ctx.last_tick == START + 20 * S
            await clock.advance(5 * S)
            assert ctx.last_tick == START + 30 * S


# -- storage failures ---------------------------------------------------------------------------------------


class LoopClock(Clock):
    """A production-style clock (no hold/release accounting) on the event loop's time.

    Under trio's ``MockClock(autojump_threshold=0)`` time jumps whenever every task is blocked, so the
    runtime's retry backoffs take no real time and the result is deterministic.
    """

    def __init__(self) -> None:
        self._origin = anyio.current_time()

    def now(self) -> datetime:
        return START + timedelta(seconds=anyio.current_time() - self._origin)


def on_trio_mock_time() -> Any:
    return pytest.mark.parametrize(
        "anyio_backend", [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-time")]
    )


def cadence(times: Sequence[datetime]) -> list[float]:
    return [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(times)]


@on_trio_mock_time()
async def test_backend_errors_are_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    repository = CountingRepository({"register": 2, "claim": 3, "commit": 2})
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=5))
    seen: list[datetime] = []

    @app.task(interval=timedelta(seconds=10))
    async def job(context: Context) -> None:
        seen.append(context.scheduled_at)

    with caplog.at_level(logging.WARNING, logger="pyncette"):
        async with app.create(clock=LoopClock()) as ctx, running(ctx):
            await anyio.sleep(100)
            repository.failures.update({"claim": 4, "commit": 3})
            await anyio.sleep(45)
            state = await ctx.get_task(job)
    # registration succeeded on the third attempt, 0.2 + 0.4 s late; every run happened once, on cadence
    assert offsets(seen[:1]) == [pytest.approx(10.6)]
    assert cadence(seen) == [10.0] * 13
    assert state is not None
    assert state.locked_by is None
    assert state.scheduled_at == seen[-1] + timedelta(seconds=10)
    messages = [r.getMessage() for r in caplog.records]
    for what in ("'register static tasks'", "'claim' for job/static", "'commit'"):
        assert any(f"Storage call {what} failed" in m and "simulated outage" in m for m in messages), what
    assert sum(repository.failures.values()) == 0


@on_trio_mock_time()
async def test_commit_outage_does_not_run_a_task_twice() -> None:
    repository = CountingRepository({"commit": 6})  # 0.2 + 0.4 + ... + 6.4 s of backoff, inside the lease
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=S)
    seen: list[datetime] = []

    @app.task(interval=timedelta(seconds=10), lease_duration=timedelta(seconds=60))
    async def job(context: Context) -> None:
        seen.append(context.scheduled_at)

    async with app.create(clock=LoopClock()) as ctx, running(ctx):
        await anyio.sleep(205)
    assert offsets(seen) == [pytest.approx(10 * n) for n in range(1, 21)]


class LostAnswerRepository(MemoryRepository):
    """The first ``lose`` commits are applied, but their answer never arrives (the connection dropped)."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        results = await super().commit(completions)
        if self.lose > 0:
            self.lose -= 1
            raise BackendError("connection lost before the answer")
        return results


@on_trio_mock_time()
async def test_commit_whose_answer_was_lost_is_not_reported_as_a_lost_lease(caplog: pytest.LogCaptureFixture) -> None:
    repository = LostAnswerRepository(lose=2)
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=S)
    seen: list[str] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        seen.append(context.task.name)

    @app.task(interval=timedelta(seconds=10))
    async def ticker(context: Context) -> None:
        seen.append("ticker")

    with caplog.at_level(logging.WARNING, logger="pyncette"):
        async with app.create(clock=LoopClock()) as ctx:
            await ctx.schedule_tasks(job, {f"i{n}": {"execute_at": START} for n in range(5)})
            async with running(ctx):
                await anyio.sleep(25)
            remaining = await ctx.list_tasks(job)
    assert sorted(seen) == ["i0", "i1", "i2", "i3", "i4", "ticker", "ticker"]
    assert remaining.tasks == []
    assert repository.lose == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("Storage call 'commit' failed" in m for m in messages)
    assert not [m for m in messages if "lease had been lost" in m]


class SlowCommitRepository(MemoryRepository):
    """Commits take a while to land (a far-away database)."""

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        await anyio.sleep(1.5)
        return await super().commit(completions)


@on_trio_mock_time()
async def test_slow_commit_does_not_stall_a_static_task() -> None:
    app = Pyncette(repository_factory=shared_repository(SlowCommitRepository()), poll_interval=S)
    seen: list[datetime] = []
    started: list[datetime] = []

    @app.task(interval=S, lease_duration=timedelta(seconds=60))
    async def job(context: Context) -> None:
        seen.append(context.scheduled_at)
        started.append(context.app_context.clock.now())

    async with app.create(clock=LoopClock()) as ctx, running(ctx):
        await anyio.sleep(10.2)
    # each run commits 1.5 s after it starts, so runs fall behind, but they must keep coming
    assert len(seen) >= 5
    assert cadence(seen) == [1.0] * (len(seen) - 1)
    assert max(cadence(started)) <= 2


class SlowClaimRepository(MemoryRepository):
    """Claims take a second each (a far-away, busy database); records how long each new lease runs."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.lease_seconds: list[float] = []

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        await anyio.sleep(1)
        self.lease_seconds.append((lease_until - self.clock.now()).total_seconds())
        return await super().claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)


@on_trio_mock_time()
async def test_slow_claims_neither_shorten_leases_nor_starve_static_tasks() -> None:
    clock = LoopClock()
    repository = SlowClaimRepository(clock)
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=S, batch_size=1)
    dynamic_runs: list[str] = []
    static_runs: list[datetime] = []

    @app.dynamic_task(lease_duration=timedelta(seconds=10))
    async def backlog(context: Context) -> None:
        dynamic_runs.append(context.task.name)

    @app.task(interval=timedelta(seconds=5))
    async def heartbeat(context: Context) -> None:
        static_runs.append(clock.now())

    async with app.create(clock=clock) as ctx:
        await ctx.schedule_tasks(backlog, {f"i{n}": {"execute_at": START} for n in range(60)})
        async with running(ctx):
            await anyio.sleep(90)
    assert sorted(dynamic_runs) == sorted(f"i{n}" for n in range(60))
    # every lease runs its full duration from the moment it is granted, however long the loop has been busy
    assert min(repository.lease_seconds) >= 9.0
    # the backlog takes about a minute of claims; the static task keeps its cadence meanwhile
    assert len(static_runs) >= 12
    assert max(cadence(static_runs)) <= 7


class RoundTripRepository(MemoryRepository):
    """Every registration and claim is a 5 ms round trip."""

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        await anyio.sleep(0.005)
        return await super().register(records, now=now, mode=mode)

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        await anyio.sleep(0.005)
        return await super().claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)


@on_trio_mock_time()
async def test_static_runs_are_claimed_ahead_and_start_on_time() -> None:
    clock = LoopClock()
    app = Pyncette(repository_factory=shared_repository(RoundTripRepository()), poll_interval=S)
    lags: list[float] = []

    @app.task(schedule="* * * * * *")
    async def every_second(context: Context) -> None:
        lags.append((clock.now() - context.scheduled_at).total_seconds())

    async with app.create(clock=clock) as ctx, running(ctx):
        await anyio.sleep(20.5)
    assert len(lags) == 20
    assert min(lags) >= 0  # never started before it was due
    # the round trip is known from registering the task, so even the first run is claimed ahead of time
    assert max(lags) < 0.001


@on_trio_mock_time()
async def test_graceful_shutdown_while_storage_is_down() -> None:
    repository = CountingRepository()
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=S)
    stopped = anyio.Event()

    @app.task(interval=timedelta(seconds=10))
    async def job(context: Context) -> None:
        return None

    async def run(ctx: PyncetteContext, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await ctx.run(task_status=task_status)
        stopped.set()

    async with app.create(clock=LoopClock()) as ctx, anyio.create_task_group() as tg:
        await tg.start(run, ctx)
        await anyio.sleep(5)
        repository.failures.update({"claim": 10**6, "get": 10**6})
        await anyio.sleep(5)
        ctx.shutdown()
        with anyio.move_on_after(600):
            await stopped.wait()
        finished = stopped.is_set()
        if not finished:
            ctx.cancel()
    assert finished


@pytest.mark.parametrize("method", ["register", "claim", "commit"])
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_storage_failure_does_not_freeze_the_virtual_clock(method: str) -> None:
    repository = CountingRepository({method: 1})
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=5))
    clock = VirtualClock(START)
    seen: list[datetime] = []

    @app.task(interval=timedelta(seconds=10))
    async def job(context: Context) -> None:
        seen.append(context.scheduled_at)

    async with app.create(clock=clock) as ctx, anyio.create_task_group() as tg:
        tg.start_soon(ctx.run)
        try:
            with anyio.fail_after(1):  # real time: only a guard against the hang
                await clock.advance(timedelta(seconds=30))
        finally:
            ctx.cancel()
    assert len(seen) >= 2


# -- shutdown and cancel ----------------------------------------------------------------------------------------


async def test_graceful_shutdown_waits_for_running_tasks_and_starts_no_new_ones() -> None:
    app = Pyncette(poll_interval=S)
    clock = VirtualClock(START)
    events: list[tuple[str, float]] = []
    returned: list[float] = []

    def log(event: str) -> None:
        events.append((event, (clock.now() - START).total_seconds()))

    @app.task(interval=timedelta(seconds=10))
    async def slow(context: Context) -> None:
        log("slow start")
        await pyncette.sleep(30)
        log("slow end")

    @app.task(interval=timedelta(seconds=12))
    async def later(context: Context) -> None:
        log("later")

    async with app.create(clock=clock) as ctx:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await ctx.run()
                returned.append((clock.now() - START).total_seconds())

            tg.start_soon(run)
            await clock.advance(11 * S)
            ctx.shutdown()
            await clock.advance_to(START + 39 * S)
            assert returned == []  # still waiting for "slow"
            await clock.advance_to(START + 41 * S)
            assert len(returned) == 1
            await clock.advance(timedelta(minutes=1))
        state = await ctx.get_task(slow)
    assert events == [("slow start", 10), ("slow end", 40)]
    assert state is not None
    assert state.locked_by is None
    assert offsets([state.scheduled_at]) == [20]


async def test_cancel_cancels_running_tasks() -> None:
    app = Pyncette(poll_interval=S)
    clock = VirtualClock(START)
    events: list[str] = []

    @app.fixture()
    async def resource(app_context: PyncetteContext) -> AsyncIterator[str]:
        yield "r"
        events.append("fixture down")

    @app.task(interval=timedelta(seconds=10), lease_duration=timedelta(seconds=60))
    async def slow(context: Context) -> None:
        events.append("start")
        try:
            await pyncette.sleep(1000)
        except anyio.get_cancelled_exc_class():
            events.append("cancelled")
            raise
        events.append("finished")

    async with app.create(clock=clock) as ctx:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ctx.run)
            await clock.advance(12 * S)
            ctx.cancel()
        state = await ctx.get_task(slow)
        events.append("run returned")
    assert events == ["start", "cancelled", "run returned", "fixture down"]
    # not committed, not unlocked: the lease expires and the run is retried elsewhere
    assert state is not None
    assert state.locked_by is not None
    assert state.locked_until == START + 10 * S + timedelta(seconds=60)
    assert offsets([state.scheduled_at]) == [10]


# -- bulk scheduling -----------------------------------------------------------------------------------------------


async def test_schedule_tasks_registers_many() -> None:
    repository = CountingRepository()
    app = Pyncette(repository_factory=shared_repository(repository))
    clock = VirtualClock(START)
    seen: dict[str, int] = {}

    @app.dynamic_task()
    async def job(context: Context) -> None:
        assert context.task.name not in seen
        seen[context.task.name] = context.args["n"]

    names = {f"i{n}": {"execute_at": START + S, "n": n} for n in range(2500)}
    async with started(app, clock) as ctx:
        instances = await ctx.schedule_tasks(job, names)
        assert [t.name for t in instances] == list(names)
        assert all(t.template is job for t in instances)
        # written in chunks, not one call per instance
        assert repository.calls["register"] <= 1 + 3
        await clock.advance(2 * S)
        assert (await ctx.list_tasks(job)).tasks == []
    assert seen == {f"i{n}": n for n in range(2500)}


async def test_schedule_tasks_reports_running_instances_and_writes_the_rest() -> None:
    app = Pyncette(poll_interval=S)
    clock = VirtualClock(START)
    release = anyio.Event()
    started_names: set[str] = set()

    @app.dynamic_task(lease_duration=timedelta(minutes=10))
    async def job(context: Context) -> None:
        if context.args.get("block"):
            started_names.add(context.task.name)
            await release.wait()  # holds the clock: no clock.advance() until released

    async with started(app, clock) as ctx:
        busy_names = [f"busy{n}" for n in range(12)]
        await ctx.schedule_task(job, "idle", interval=timedelta(hours=1))
        await ctx.schedule_tasks(job, {n: {"execute_at": START, "block": True} for n in busy_names})
        with anyio.fail_after(5):
            while started_names != set(busy_names):
                await anyio.sleep(0)
        batch = {n: {"interval": timedelta(seconds=7), "v": 2} for n in [*busy_names, "idle", "new"]}
        with pytest.raises(TaskLockedException) as excinfo:
            await ctx.schedule_tasks(job, batch)
        message = str(excinfo.value)
        assert "12 instance(s) of 'job' are running: busy0, busy1," in message
        assert "busy10" not in message  # only the first ten are named
        assert message.endswith(" ...")
        assert excinfo.value.task is not None
        # the instances that were not running were written
        idle = await ctx.get_task(job, "idle")
        new = await ctx.get_task(job, "new")
        assert idle is not None
        assert new is not None
        assert idle.task.interval == timedelta(seconds=7)
        assert idle.task.extra_args == {"v": 2}
        assert new.task.extra_args == {"v": 2}
        busy = await ctx.get_task(job, "busy3")
        assert busy is not None
        assert busy.task.extra_args == {"block": True}
        # force overwrites the running ones too
        await ctx.schedule_tasks(job, batch, force=True)
        busy = await ctx.get_task(job, "busy3")
        assert busy is not None
        assert busy.task.extra_args == {"v": 2}
        assert busy.locked_by is None
        release.set()
        await clock.advance(S)


# -- inspecting tasks ----------------------------------------------------------------------------------------------


async def test_get_task_on_static_tasks() -> None:
    app = Pyncette(poll_interval=S)
    clock = VirtualClock(START)
    during: list[Any] = []

    @app.task(interval=timedelta(seconds=10), lease_duration=timedelta(seconds=30))
    async def job(context: Context) -> None:
        during.append(await context.app_context.get_task(context.task))

    @app.task(schedule="0 12 * * *", timezone="Asia/Tokyo")
    async def tokyo(context: Context) -> None:
        return None

    async with app.create(clock=clock) as ctx:
        assert await ctx.get_task(job) is None  # registered when run() starts
        async with running(ctx):
            state = await ctx.get_task(job)
            assert state is not None
            assert state.task is job
            assert offsets([state.scheduled_at]) == [10]
            assert state.locked_by is None
            assert state.locked_until is None
            await clock.advance(10 * S)
            after = await ctx.get_task(job)
            noon = await ctx.get_task(tokyo)
    [inside] = during
    assert inside.locked_by is not None
    assert inside.locked_until == START + 40 * S
    assert offsets([inside.scheduled_at]) == [10]
    assert after is not None
    assert offsets([after.scheduled_at]) == [20]
    assert noon is not None
    assert noon.scheduled_at.tzinfo == ZoneInfo("Asia/Tokyo")
    assert noon.scheduled_at.isoformat() == "2030-01-01T12:00:00+09:00"


async def test_context_scheduled_at_is_in_the_task_time_zone() -> None:
    app = Pyncette(poll_interval=timedelta(minutes=1))
    clock = VirtualClock(START)
    seen: dict[str, datetime] = {}

    @app.task(schedule="0 * * * *", timezone="America/New_York")
    async def new_york(context: Context) -> None:
        seen.setdefault("static-ny", context.scheduled_at)

    @app.task(schedule="0 * * * *", timezone="+05:30")
    async def india(context: Context) -> None:
        seen.setdefault("static-offset", context.scheduled_at)

    @app.task(interval=timedelta(minutes=30))
    async def plain(context: Context) -> None:
        seen.setdefault("static-interval", context.scheduled_at)

    @app.dynamic_task()
    async def dynamic(context: Context) -> None:
        seen.setdefault(f"dynamic-{context.task.name}", context.scheduled_at)

    async with started(app, clock) as ctx:
        await ctx.schedule_task(dynamic, "dublin", schedule="30 * * * *", timezone="Europe/Dublin")
        await ctx.schedule_task(dynamic, "utc", execute_at=START + timedelta(minutes=5))
        await clock.advance(timedelta(hours=1))
    assert seen["static-ny"].isoformat() == "2029-12-31T20:00:00-05:00"
    assert seen["static-ny"].tzinfo == ZoneInfo("America/New_York")
    assert seen["static-offset"].utcoffset() == timedelta(hours=5, minutes=30)
    assert seen["static-offset"].isoformat() == "2030-01-01T06:00:00+05:30"  # 00:00Z is 05:30 local
    assert seen["static-interval"].tzinfo == timezone.utc
    assert seen["dynamic-dublin"].tzinfo == ZoneInfo("Europe/Dublin")
    assert seen["dynamic-dublin"].isoformat() == "2030-01-01T00:30:00+00:00"
    assert seen["dynamic-utc"].tzinfo == timezone.utc
    assert offsets([seen["dynamic-utc"]]) == [300]


# -- several apps on one storage -----------------------------------------------------------------------------------


async def test_two_apps_sharing_a_sqlite_file_run_each_run_once(tmp_path: Path) -> None:
    database = str(tmp_path / "shared.db")
    clock = VirtualClock(START)
    static: list[tuple[str, datetime]] = []
    dynamic: list[tuple[str, str]] = []

    def build(label: str) -> Pyncette:
        app = Pyncette(sqlite_database=database, poll_interval=S)

        @app.task(name="tick", interval=timedelta(seconds=10))
        async def tick(context: Context) -> None:
            static.append((label, context.scheduled_at))
            await pyncette.sleep(3)

        @app.dynamic_task(name="dyn")
        async def dyn(context: Context) -> None:
            dynamic.append((label, context.task.name))
            await pyncette.sleep(1)

        return app

    async with started(build("a"), clock) as a, started(build("b"), clock):
        await a.schedule_tasks(a.app.tasks[1], {f"d{n}": {"execute_at": START + 5 * S} for n in range(20)})
        await clock.advance(timedelta(seconds=105))  # the run at 100 s finishes at 103 s
    assert sorted(offsets([t for _, t in static])) == [10.0 * n for n in range(1, 11)]
    assert sorted(name for _, name in dynamic) == sorted(f"d{n}" for n in range(20))


# -- pyncette.sleep --------------------------------------------------------------------------------------------------


async def test_sleep_outside_an_app_is_real_time() -> None:
    assert type(current_clock()) is Clock
    began = time.monotonic()
    await pyncette.sleep(0.02)
    assert time.monotonic() - began >= 0.02
