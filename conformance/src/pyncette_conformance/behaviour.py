"""App-level conformance: every scheduling semantic, run through real apps on the backend under test.

Schedule time is virtual (:class:`pyncette.testing.VirtualClock`), so hours of
schedules take milliseconds even over a network; storage round trips are real.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

import pyncette
from pyncette import Context, ExecutionMode, FailureMode, Pyncette, PyncetteContext
from pyncette.errors import ConfigurationError, LeaseLostException, TaskLockedException
from pyncette.testing import VirtualClock, running
from pyncette.utils import with_heartbeat

from .base import ConformanceBase, requires
from .harness import BackendUnderTest

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
S = timedelta(seconds=1)


class AppFactory:
    """Builds apps that share one storage namespace and one virtual clock."""

    def __init__(self, under_test: BackendUnderTest) -> None:
        self.under_test = under_test
        self.options = under_test.isolated_options()
        self.clock = VirtualClock(START, settle_timeout=under_test.settle_timeout)

    def app(self, **kwargs: Any) -> Pyncette:
        settings: dict[str, Any] = {"poll_interval": timedelta(seconds=10), **self.options, **kwargs}
        return Pyncette(repository_factory=self.under_test.backend, **settings)

    @contextlib.asynccontextmanager
    async def run(self, app: Pyncette) -> AsyncIterator[PyncetteContext]:
        async with app.create(clock=self.clock) as ctx, running(ctx):
            yield ctx


def offsets(times: list[datetime]) -> list[float]:
    """Seconds since START, for readable assertions."""
    return [(t - START).total_seconds() for t in times]


class BehaviourSuite(ConformanceBase):
    """Scheduling semantics of Pyncette 1.x, on any backend."""

    # -- static tasks ------------------------------------------------------------------------------

    async def test_interval_first_run_and_cadence(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[datetime] = []

        @app.task(interval=timedelta(seconds=10))
        async def tick(context: Context) -> None:
            seen.append(context.scheduled_at)

        async with apps.run(app):
            await apps.clock.advance(timedelta(seconds=5))
            assert seen == []
            await apps.clock.advance(timedelta(seconds=40))
        assert offsets(seen) == [10, 20, 30, 40]

    async def test_cron_with_seconds_cadence_and_start_time(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[tuple[datetime, datetime]] = []

        @app.task(schedule="* * * * * */15")
        async def every_15s(context: Context) -> None:
            seen.append((context.scheduled_at, apps.clock.now()))

        async with apps.run(app):
            await apps.clock.advance(timedelta(seconds=61))
        assert offsets([s for s, _ in seen]) == [15, 30, 45, 60]
        # Started exactly when due: the loop sleeps until the next run, not a fixed poll.
        assert all(started == scheduled for scheduled, started in seen)

    async def test_timezone_is_applied_to_cron(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[datetime] = []

        @app.task(schedule="0 9 * * *", timezone="Asia/Tokyo")
        async def morning(context: Context) -> None:
            seen.append(context.scheduled_at)

        async with apps.run(app):
            await apps.clock.advance(timedelta(days=2))
        assert [t.astimezone(timezone.utc).hour for t in seen] == [0, 0]
        assert all(t.hour == 9 and t.utcoffset() == timedelta(hours=9) for t in seen)

    async def test_disabled_task_never_runs(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[str] = []

        @app.task(interval=timedelta(seconds=1), enabled=False)
        async def off(context: Context) -> None:
            seen.append("off")

        @app.task(interval=timedelta(seconds=5))
        async def on(context: Context) -> None:
            seen.append("on")

        async with apps.run(app):
            await apps.clock.advance(timedelta(seconds=10))
        assert seen == ["on", "on"]

    @requires("persistent")
    async def test_catch_up_after_downtime(self, apps: AppFactory) -> None:
        seen: list[datetime] = []

        def build() -> Pyncette:
            app = apps.app()

            @app.task(interval=timedelta(seconds=10))
            async def job(context: Context) -> None:
                seen.append(context.scheduled_at)

            return app

        async with apps.run(build()):
            await apps.clock.advance(timedelta(seconds=30))
        await apps.clock.advance(timedelta(seconds=60))  # nothing running
        async with apps.run(build()):
            await apps.clock.advance(timedelta(seconds=1))
        assert offsets(seen) == [10, 20, 30, 40, 50, 60, 70, 80, 90]

    @requires("persistent")
    async def test_fast_forward_skips_missed_runs(self, apps: AppFactory) -> None:
        seen: list[datetime] = []

        def build() -> Pyncette:
            app = apps.app()

            @app.task(interval=timedelta(seconds=10), fast_forward=True)
            async def job(context: Context) -> None:
                seen.append(context.scheduled_at)

            return app

        async with apps.run(build()):
            await apps.clock.advance(timedelta(seconds=30))
        await apps.clock.advance(timedelta(seconds=65))
        async with apps.run(build()):
            await apps.clock.advance(timedelta(seconds=10))
        # One overdue run, then straight to the first point after "now", keeping the phase.
        assert offsets(seen) == [10, 20, 30, 40, 100]

    # -- failure and execution modes -----------------------------------------------------------------

    async def _failing(self, apps: AppFactory, **options: Any) -> list[float]:
        app = apps.app(poll_interval=timedelta(seconds=1))
        attempts: list[datetime] = []

        @app.task(interval=timedelta(seconds=100), lease_duration=timedelta(seconds=20), **options)
        async def flaky(context: Context) -> None:
            attempts.append(apps.clock.now())
            raise RuntimeError("boom")

        async with apps.run(app):
            await apps.clock.advance(timedelta(seconds=150))
        return offsets(attempts)

    async def test_failure_mode_none_retries_after_lease_expires(self, apps: AppFactory) -> None:
        assert (await self._failing(apps))[:3] == [100, 120, 140]

    async def test_failure_mode_unlock_retries_next_tick(self, apps: AppFactory) -> None:
        attempts = await self._failing(apps, failure_mode=FailureMode.UNLOCK)
        assert attempts[:3] == [100, 101, 102]

    async def test_failure_mode_commit_moves_to_next_run(self, apps: AppFactory) -> None:
        assert await self._failing(apps, failure_mode=FailureMode.COMMIT) == [100]

    async def test_at_most_once_failure_is_not_retried(self, apps: AppFactory) -> None:
        assert await self._failing(apps, execution_mode=ExecutionMode.AT_MOST_ONCE) == [100]

    async def test_at_most_once_commits_before_running(self, apps: AppFactory) -> None:
        app = apps.app()
        states: list[Any] = []

        @app.task(interval=timedelta(seconds=10), execution_mode=ExecutionMode.AT_MOST_ONCE)
        async def once(context: Context) -> None:
            states.append(await context.app_context.get_task(context.task))
            await context.heartbeat()  # a no-op in this mode

        async with apps.run(app):
            await apps.clock.advance(timedelta(seconds=10))
        [state] = states
        assert state.locked_by is None
        assert offsets([state.scheduled_at]) == [20]

    async def test_expired_lease_is_taken_over(self, apps: AppFactory) -> None:
        app = apps.app(poll_interval=timedelta(seconds=1))
        starts: list[float] = []
        finished: list[float] = []

        @app.task(interval=timedelta(seconds=100), lease_duration=timedelta(seconds=10))
        async def slow(context: Context) -> None:
            starts.append((apps.clock.now() - START).total_seconds())
            await pyncette.sleep(25 if len(starts) == 1 else 1)
            finished.append((apps.clock.now() - START).total_seconds())

        async with apps.run(app) as ctx:
            await apps.clock.advance(timedelta(seconds=130))
            state = await ctx.get_task(slow)
        assert state is not None
        # The first run outlived its 10 s lease: a second one started when it expired, and only
        # the second could commit (next run at 200, not a third attempt at 120).
        assert starts == [100, 110]
        assert finished == [111, 125]
        assert offsets([state.scheduled_at]) == [200]

    # -- heartbeats ---------------------------------------------------------------------------------

    async def test_manual_heartbeat_keeps_the_lease(self, apps: AppFactory) -> None:
        app = apps.app(poll_interval=timedelta(seconds=1))
        starts: list[datetime] = []

        @app.task(interval=timedelta(seconds=100), lease_duration=timedelta(seconds=10))
        async def long(context: Context) -> None:
            starts.append(apps.clock.now())
            for _ in range(5):
                await pyncette.sleep(6)
                await context.heartbeat()

        async with apps.run(app):
            await apps.clock.advance(timedelta(seconds=140))
        assert offsets(starts) == [100]

    async def test_automatic_heartbeat_keeps_the_lease(self, apps: AppFactory) -> None:
        app = apps.app(poll_interval=timedelta(seconds=1))
        starts: list[datetime] = []

        @app.task(interval=timedelta(seconds=100), lease_duration=timedelta(seconds=10))
        @with_heartbeat()
        async def long(context: Context) -> None:
            starts.append(apps.clock.now())
            await pyncette.sleep(35)

        async with apps.run(app):
            await apps.clock.advance(timedelta(seconds=140))
        assert offsets(starts) == [100]

    async def test_heartbeat_after_forced_reschedule_raises_lease_lost(self, apps: AppFactory) -> None:
        app = apps.app(poll_interval=timedelta(seconds=1))
        outcomes: list[str] = []

        @app.dynamic_task(lease_duration=timedelta(seconds=60))
        async def job(context: Context) -> None:
            await pyncette.sleep(5)
            try:
                await context.heartbeat()
                outcomes.append("kept")
            except LeaseLostException:
                outcomes.append("lost")
                raise

        async with apps.run(app) as ctx:
            await ctx.schedule_task(job, "a", interval=timedelta(seconds=100))
            await ctx.schedule_task(job, "b", interval=timedelta(seconds=100))
            await apps.clock.advance(timedelta(seconds=102))
            with pytest.raises(TaskLockedException):
                await ctx.schedule_task(job, "a", interval=timedelta(seconds=50))
            await ctx.schedule_task(job, "a", interval=timedelta(seconds=50), force=True)
            await ctx.unschedule_task(job, "b")
            await apps.clock.advance(timedelta(seconds=5))
            state = await ctx.get_task(job, "a")
        assert sorted(outcomes[:2]) == ["lost", "lost"]
        # The forced definition stands; the lost run did not commit over it.
        assert state is not None and state.task.interval == timedelta(seconds=50)

    async def test_heartbeat_lease_lost_can_cancel_the_body(self, apps: AppFactory) -> None:
        app = apps.app(poll_interval=timedelta(seconds=1))
        reached_end: list[bool] = []

        @app.dynamic_task(lease_duration=timedelta(seconds=10))
        @with_heartbeat(cancel_on_lease_lost=True)
        async def job(context: Context) -> None:
            await pyncette.sleep(60)
            reached_end.append(True)

        async with apps.run(app) as ctx:
            await ctx.schedule_task(job, "a", interval=timedelta(seconds=100))
            await apps.clock.advance(timedelta(seconds=101))
            await ctx.unschedule_task(job, "a")
            await apps.clock.advance(timedelta(seconds=20))
            assert await ctx.get_task(job, "a") is None
        assert reached_end == []

    # -- dynamic tasks ------------------------------------------------------------------------------

    async def test_dynamic_instances_run_with_their_arguments(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[tuple[str, Any, float]] = []

        @app.dynamic_task()
        async def hello(context: Context) -> None:
            seen.append((context.task.name, context.args["who"], (context.scheduled_at - START).total_seconds()))

        async with apps.run(app) as ctx:
            await ctx.schedule_task(hello, "a", interval=timedelta(seconds=10), who="alice")
            await ctx.schedule_task(hello, "b", schedule="* * * * * */20", who="bob")
            await apps.clock.advance(timedelta(seconds=40))
        assert sorted(seen) == sorted(
            [
                ("a", "alice", 10),
                ("a", "alice", 20),
                ("a", "alice", 30),
                ("a", "alice", 40),
                ("b", "bob", 20),
                ("b", "bob", 40),
            ]
        )

    async def test_schedule_update_keeps_sooner_time(self, apps: AppFactory) -> None:
        app = apps.app()

        @app.dynamic_task()
        async def job(context: Context) -> None:
            pass

        async with apps.run(app) as ctx:
            await ctx.schedule_task(job, "x", interval=timedelta(seconds=100))
            await ctx.schedule_task(job, "x", interval=timedelta(seconds=500), marker=1)
            state = await ctx.get_task(job, "x")
            assert state is not None and offsets([state.scheduled_at]) == [100]
            assert state.task.interval == timedelta(seconds=500) and state.task.extra_args == {"marker": 1}
            await ctx.schedule_task(job, "x", interval=timedelta(seconds=5))
            state = await ctx.get_task(job, "x")
            assert state is not None and offsets([state.scheduled_at]) == [5]

    async def test_unschedule_stops_runs(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[float] = []

        @app.dynamic_task()
        async def job(context: Context) -> None:
            seen.append((context.scheduled_at - START).total_seconds())

        async with apps.run(app) as ctx:
            instance = await ctx.schedule_task(job, "x", interval=timedelta(seconds=10))
            await apps.clock.advance(timedelta(seconds=25))
            await ctx.unschedule_task(instance)
            await apps.clock.advance(timedelta(seconds=30))
            assert await ctx.get_task(job, "x") is None
        assert seen == [10, 20]

    async def test_once_off_future_past_and_removed_after_success(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[tuple[str, float]] = []

        @app.dynamic_task()
        async def delayed(context: Context) -> None:
            seen.append((context.task.name, (apps.clock.now() - START).total_seconds()))

        async with apps.run(app) as ctx:
            await ctx.schedule_task(delayed, "future", execute_at=START + timedelta(seconds=30))
            await ctx.schedule_task(delayed, "past", execute_at=START - timedelta(days=1))
            await apps.clock.advance(timedelta(seconds=1))
            assert seen == [("past", 0)]
            await apps.clock.advance(timedelta(seconds=100))
            assert await ctx.get_task(delayed, "future") is None
            assert await ctx.get_task(delayed, "past") is None
        assert seen == [("past", 0), ("future", 30)]

    async def test_once_off_failure_is_retried_until_success(self, apps: AppFactory) -> None:
        app = apps.app(poll_interval=timedelta(seconds=1))
        attempts: list[float] = []

        @app.dynamic_task(lease_duration=timedelta(seconds=10))
        async def flaky(context: Context) -> None:
            attempts.append((apps.clock.now() - START).total_seconds())
            if len(attempts) < 3:
                raise RuntimeError("not yet")

        async with apps.run(app) as ctx:
            await ctx.schedule_task(flaky, "x", execute_at=START + timedelta(seconds=5))
            await apps.clock.advance(timedelta(seconds=60))
            assert await ctx.get_task(flaky, "x") is None
        assert attempts == [5, 15, 25]

    async def test_once_off_at_most_once_runs_once_even_if_it_fails(self, apps: AppFactory) -> None:
        app = apps.app(poll_interval=timedelta(seconds=1))
        attempts: list[float] = []

        @app.dynamic_task(execution_mode=ExecutionMode.AT_MOST_ONCE, lease_duration=timedelta(seconds=10))
        async def fragile(context: Context) -> None:
            attempts.append((apps.clock.now() - START).total_seconds())
            raise RuntimeError("gone")

        async with apps.run(app) as ctx:
            await ctx.schedule_task(fragile, "x", execute_at=START + timedelta(seconds=5))
            await apps.clock.advance(timedelta(seconds=60))
            assert await ctx.get_task(fragile, "x") is None
        assert attempts == [5]

    async def test_list_tasks_pages_over_many_instances(self, apps: AppFactory) -> None:
        app = apps.app()

        @app.dynamic_task()
        async def job(context: Context) -> None:
            pass

        @app.dynamic_task()
        async def other(context: Context) -> None:
            pass

        names = {f"instance-{i}" for i in range(1100)}
        async with app.create(clock=apps.clock) as ctx:
            await ctx.schedule_tasks(job, {n: {"interval": timedelta(hours=1), "n": n} for n in names})
            await ctx.schedule_task(other, "not-listed", interval=timedelta(hours=1))
            seen: list[str] = []
            token = None
            for _ in range(100):
                page = await ctx.list_tasks(job, limit=97, continuation_token=token)
                assert len(page.tasks) <= 97
                seen.extend(state.task.name for state in page.tasks)
                assert all(state.task.extra_args["n"] == state.task.name for state in page.tasks)
                token = page.continuation_token
                if token is None:
                    break
            static = pyncette.Task(_noop, name="static-probe", interval=timedelta(seconds=1))
            with pytest.raises(ValueError, match="not a dynamic task"):
                await ctx.list_tasks(static)
        assert len(seen) == len(names) and set(seen) == names

    async def test_batch_size_smaller_than_due_set(self, apps: AppFactory) -> None:
        app = apps.app(batch_size=7)
        seen: Counter[str] = Counter()

        @app.dynamic_task()
        async def job(context: Context) -> None:
            seen[context.task.name] += 1

        async with apps.run(app) as ctx:
            await ctx.schedule_tasks(job, {f"i{n}": {"execute_at": START} for n in range(60)})
            await apps.clock.advance(timedelta(seconds=1))
        assert len(seen) == 60 and set(seen.values()) == {1}

    async def test_concurrency_limit_bounds_running_tasks(self, apps: AppFactory) -> None:
        app = apps.app(concurrency_limit=3, poll_interval=timedelta(seconds=1))
        running_now = 0
        peak = 0
        done: list[str] = []

        @app.dynamic_task(lease_duration=timedelta(seconds=300))
        async def job(context: Context) -> None:
            nonlocal running_now, peak
            running_now += 1
            peak = max(peak, running_now)
            await pyncette.sleep(10)
            running_now -= 1
            done.append(context.task.name)

        async with apps.run(app) as ctx:
            await ctx.schedule_tasks(job, {f"i{n}": {"execute_at": START} for n in range(10)})
            await apps.clock.advance(timedelta(seconds=5))
            # Unclaimed work stays available in storage, not in this process.
            page = await ctx.list_tasks(job, limit=100)
            assert sum(1 for s in page.tasks if s.locked_by is not None) == 3
            await apps.clock.advance(timedelta(seconds=60))
        assert peak == 3
        assert sorted(done) == sorted(f"i{n}" for n in range(10))

    @requires("persistent")
    async def test_partitioned_tasks_and_enabled_partitions(self, apps: AppFactory) -> None:
        everything = apps.app()
        partial = apps.app()
        seen: dict[str, list[str]] = {"all": [], "some": []}

        @everything.partitioned_task(partition_count=4)
        async def sharded(context: Context) -> None:
            seen["all"].append(context.task.name)

        @partial.partitioned_task(name="sharded", partition_count=4, enabled_partitions=[0, 1])
        async def sharded_partial(context: Context) -> None:
            seen["some"].append(context.task.name)

        names = [f"p{i}" for i in range(40)]
        selector = sharded.partition_selector
        async with partial.create(clock=apps.clock) as ctx, running(ctx):
            await ctx.schedule_tasks(sharded_partial, {n: {"execute_at": START} for n in names})
            await apps.clock.advance(timedelta(seconds=1))
            listed: list[str] = []
            token = None
            while True:
                page = await ctx.list_tasks(sharded_partial, continuation_token=token, limit=15)
                listed.extend(s.task.name for s in page.tasks)
                token = page.continuation_token
                if token is None:
                    break
        expected_partial = sorted(n for n in names if selector(4, n) in (0, 1))
        assert sorted(seen["some"]) == expected_partial
        assert sorted(listed) == sorted(set(names) - set(expected_partial))
        async with apps.run(everything):
            await apps.clock.advance(timedelta(seconds=1))
        assert sorted(seen["all"]) == sorted(set(names) - set(expected_partial))
        assert len({selector(4, n) for n in names}) == 4

    async def test_dst_spring_forward_and_fall_back(self, apps: AppFactory) -> None:
        clock = VirtualClock(datetime(2026, 10, 31, 12, 0, tzinfo=timezone.utc))
        apps.clock = clock
        app = apps.app(poll_interval=timedelta(hours=1))
        seen: list[tuple[str, datetime]] = []

        @app.dynamic_task()
        async def local(context: Context) -> None:
            seen.append((context.task.name, context.scheduled_at.astimezone(timezone.utc)))

        async with apps.run(app) as ctx:
            await ctx.schedule_task(local, "ny-hourly", schedule="0 * * * *", timezone="America/New_York")
            await ctx.schedule_task(local, "ny-daily-0130", schedule="30 1 * * *", timezone="America/New_York")
            await clock.advance(timedelta(days=1))
        hourly = [t for n, t in seen if n == "ny-hourly" and t.date() == datetime(2026, 11, 1).date()]
        # 23:00, 00:00, 01:00 EDT, then 01:00 again in EST (06:00Z) is skipped: it runs once; 02:00 EST.
        assert [t.hour for t in hourly if 3 <= t.hour <= 8] == [3, 4, 5, 7, 8]
        daily = [t for n, t in seen if n == "ny-daily-0130"]
        assert [t.isoformat() for t in daily] == ["2026-11-01T05:30:00+00:00"]

    # -- misc -----------------------------------------------------------------------------------------

    async def test_fixtures_middleware_and_add_to_context(self, apps: AppFactory) -> None:
        app = apps.app()
        events: list[str] = []

        @app.fixture()
        async def db(app_context: PyncetteContext) -> AsyncIterator[str]:
            events.append("db up")
            yield "db-handle"
            events.append("db down")

        @app.fixture(name="cache")
        async def make_cache(app_context: PyncetteContext) -> AsyncIterator[str]:
            events.append("cache up")
            yield "cache-handle"
            events.append("cache down")

        @app.middleware
        async def outer(context: Context, next: Any) -> None:
            events.append("outer in")
            await next()
            events.append("outer out")

        @app.middleware
        async def inner(context: Context, next: Any) -> None:
            events.append("inner in")
            await next()
            events.append("inner out")

        @app.task(interval=timedelta(seconds=10))
        async def job(context: Context) -> None:
            events.append(f"run {context.db} {context.cache} {context.extra}")

        async with app.create(clock=apps.clock) as ctx:
            ctx.add_to_context("extra", 42)
            with pytest.raises(ConfigurationError):
                ctx.add_to_context("db", 1)
            with pytest.raises(ConfigurationError):
                ctx.add_to_context("task", 1)
            async with running(ctx):
                await apps.clock.advance(timedelta(seconds=10))
        assert events == [
            "db up",
            "cache up",
            "outer in",
            "inner in",
            "run db-handle cache-handle 42",
            "inner out",
            "outer out",
            "cache down",
            "db down",
        ]

    async def test_shutdown_lets_running_tasks_commit(self, apps: AppFactory) -> None:
        app = apps.app()
        finished: list[bool] = []

        @app.task(interval=timedelta(seconds=10))
        async def job(context: Context) -> None:
            await pyncette.sleep(5)
            finished.append(True)

        async with app.create(clock=apps.clock) as ctx:
            async with anyio.create_task_group() as tg:
                await tg.start(ctx.run)
                await apps.clock.advance(timedelta(seconds=11))
                ctx.shutdown()
                await apps.clock.advance(timedelta(seconds=5))
            state = await ctx.get_task(job)
        assert finished == [True]
        assert state is not None and state.locked_by is None and offsets([state.scheduled_at]) == [20]

    async def test_records_that_cannot_be_decoded_affect_themselves_alone(
        self, apps: AppFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Garbage in stored specs (and, where the backend can produce it, in the stored record itself):
        each bad record is logged once at ERROR with its parent and name and set aside; the other instances,
        another template and an every-second static task keep running, even with fewer slots than bad records."""
        app = apps.app(concurrency_limit=2, poll_interval=timedelta(seconds=1))
        seen: Counter[str] = Counter()

        @app.dynamic_task()
        async def job(context: Context) -> None:
            seen[context.task.name] += 1

        @app.dynamic_task()
        async def other(context: Context) -> None:
            seen[f"other:{context.task.name}"] += 1

        @app.task(interval=timedelta(seconds=1))
        async def ticker(context: Context) -> None:
            seen["ticker"] += 1

        bad_specs = ["bad-spec-1", "bad-spec-2", "bad-spec-3"]
        bad_records = ["bad-record-1", "bad-record-2", "bad-record-3"]
        good = [f"good-{i}" for i in range(6)]
        every_10s: dict[str, Any] = {"interval": timedelta(seconds=10)}
        async with app.create(clock=apps.clock) as ctx:
            await ctx.schedule_tasks(job, {name: every_10s for name in [*good, *bad_specs, *bad_records]})
            await ctx.schedule_task(other, "x", **every_10s)
            for name in bad_specs:
                try:
                    await ctx.repository.write_raw_spec(*job.instance_key(name), "{this is not json")
                except NotImplementedError:
                    pytest.skip("backend does not implement the write_raw_spec testing hook")
            for name in bad_records:
                try:
                    await ctx.repository.corrupt(*job.instance_key(name))
                except NotImplementedError:  # only the spec corruption then; these stay healthy
                    good, bad_records = [*good, *bad_records], []
                    break
            with caplog.at_level(logging.ERROR, logger="pyncette"):
                async with running(ctx):
                    await apps.clock.advance(timedelta(seconds=35))
            stored = {name: await ctx.repository.get(*job.instance_key(name)) for name in bad_specs}
        assert seen == {"ticker": 35, "other:x": 3, **{name: 3 for name in good}}
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        for name in [*bad_specs, *bad_records]:
            about = [m for m in errors if f"{job.instance_key(name)[0]}/{name}" in m]
            assert len(about) == 1, (name, errors)
        # Set aside, not deleted: the data stays for someone to look at or replace.
        assert all(record is not None and record.spec == "{this is not json" for record in stored.values())


async def _noop(context: Context) -> None:
    return None
