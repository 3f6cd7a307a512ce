"""Execution policies (retry, timeout, catch-up, overlap, jitter) and run events, on any backend.

They keep their bookkeeping (the attempt counter, the nominal time of a delayed run, the last outcome) in
:attr:`pyncette.abc.Record.state`, written in the same storage call as the reschedule: a backend that
drops or mixes up the state fails here.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import pyncette
from pyncette import Context, ExecutionMode, Retry
from pyncette import events as ev

from .base import ConformanceBase, requires
from .behaviour import START, AppFactory, S, offsets
from .coordination import _count, _spawn, _stop, _wait_ready
from .harness import BackendUnderTest


class Boom(Exception):
    """The failure the tests' task bodies raise."""


class PolicySuite(ConformanceBase):
    """Retries, timeouts, catch-up, overlap and jitter behave the same on every backend."""

    async def test_retry_backs_off_and_counts_attempts(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[tuple[float, int, float]] = []
        retrying: list[ev.Retrying] = []
        app.on(ev.Retrying, retrying.append)

        @app.task(interval=timedelta(minutes=10), retry=Retry(attempts=3, backoff=10 * S, max_backoff=15 * S))
        async def flaky(context: Context) -> None:
            seen.append(
                ((apps.clock.now() - START).total_seconds(), context.attempt, offsets([context.scheduled_at])[0])
            )
            if context.attempt < 3:
                raise Boom(f"attempt {context.attempt}")

        async with apps.run(app) as ctx:
            await apps.clock.advance(timedelta(minutes=10, seconds=5))
            state = await ctx.get_task(flaky)
            assert state is not None and state.attempt == 2 and state.last_outcome == "failed"
            assert state.last_error == "Boom: attempt 1"
            await apps.clock.advance(timedelta(minutes=1))
            state = await ctx.get_task(flaky)
        # Tries at 600 s, +10 s, then +15 s (20 s capped); the context shows the scheduled time throughout.
        assert seen == [(600, 1, 600), (610, 2, 600), (625, 3, 600)]
        assert [(e.attempt, offsets([e.retry_at])[0]) for e in retrying] == [(1, 610), (2, 625)]
        assert state is not None and state.attempt == 1 and state.last_outcome == "succeeded"
        assert offsets([state.scheduled_at])[0] == 1200  # back on the regular cadence

    async def test_exhausted_once_off_instance_is_deleted(self, apps: AppFactory) -> None:
        app = apps.app()
        tries: list[int] = []
        exhausted: list[ev.Exhausted] = []
        app.on(ev.Exhausted, exhausted.append)

        @app.dynamic_task(retry=Retry(attempts=2, backoff=5 * S))
        async def job(context: Context) -> None:
            tries.append(context.attempt)
            raise Boom("always")

        async with apps.run(app) as ctx:
            await ctx.schedule_task(job, "one", execute_at=START + 10 * S)
            await apps.clock.advance(timedelta(seconds=60))
            assert await ctx.get_task(job, "one") is None
        assert tries == [1, 2]
        assert [(e.attempt, e.action, str(e.error)) for e in exhausted] == [(2, "delete", "always")]

    async def test_exhausted_recurring_task_skips_to_next_run(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[tuple[float, int]] = []

        @app.task(interval=timedelta(minutes=1), retry=Retry(attempts=2, backoff=5 * S, retry_on=(Boom,)))
        async def job(context: Context) -> None:
            seen.append((offsets([apps.clock.now()])[0], context.attempt))
            if offsets([context.scheduled_at])[0] == 60:
                raise Boom("first run fails")
            if offsets([context.scheduled_at])[0] == 180:
                raise KeyError("not retried")

        async with apps.run(app):
            await apps.clock.advance(timedelta(minutes=4, seconds=1))
        assert seen == [(60, 1), (65, 2), (120, 1), (180, 1), (240, 1)]

    async def test_timeout_cancels_body_and_retries(self, apps: AppFactory) -> None:
        app = apps.app()
        finished: list[int] = []
        timed_out: list[ev.TimedOut] = []
        app.on(ev.TimedOut, timed_out.append)

        @app.dynamic_task(timeout=30 * S, retry=Retry(attempts=2, backoff=S))
        async def slow(context: Context) -> None:
            await pyncette.sleep(60 if context.attempt == 1 else 10)
            finished.append(context.attempt)

        async with apps.run(app) as ctx:
            await ctx.schedule_task(slow, "x", execute_at=START)
            await apps.clock.advance(timedelta(seconds=35))
            state = await ctx.get_task(slow, "x")
            assert state is not None and state.last_outcome == "timed_out" and state.attempt == 2
            await apps.clock.advance(timedelta(seconds=60))
            assert await ctx.get_task(slow, "x") is None
        assert finished == [2]
        assert [e.attempt for e in timed_out] == [1]

    async def test_catchup_window_skips_older_runs(self, apps: AppFactory) -> None:
        seen: list[float] = []
        missed: list[ev.Missed] = []

        def make() -> Any:
            app = apps.app()
            app.on(ev.Missed, missed.append)

            @app.task(interval=timedelta(minutes=1), catchup_window=timedelta(minutes=3))
            async def job(context: Context) -> None:
                seen.append(offsets([context.scheduled_at])[0])

            return app

        async with apps.run(make()):
            await apps.clock.advance(timedelta(seconds=61))
        await apps.clock.advance(timedelta(minutes=10))  # nobody runs meanwhile
        async with apps.run(make()):
            await apps.clock.advance(timedelta(seconds=1))
        # Down from 61 s to 661 s: the runs due at 120..480 s are older than 3 minutes and missed.
        assert seen == [60, 540, 600, 660]
        assert [(e.count, offsets([e.scheduled_at])[0]) for e in missed] == [(7, 120)]

    @pytest.mark.parametrize(("coalesce", "expected"), [("latest", [60, 660, 720]), ("earliest", [60, 120, 720])])
    async def test_coalesce_makes_one_run_of_many(self, apps: AppFactory, coalesce: str, expected: list[float]) -> None:
        seen: list[float] = []

        def make() -> Any:
            app = apps.app()

            @app.task(interval=timedelta(minutes=1), coalesce=coalesce)
            async def job(context: Context) -> None:
                seen.append(offsets([context.scheduled_at])[0])

            return app

        async with apps.run(make()):
            await apps.clock.advance(timedelta(seconds=61))
        await apps.clock.advance(timedelta(minutes=10))
        async with apps.run(make()):
            await apps.clock.advance(timedelta(seconds=60))
        assert seen == expected

    async def test_overlap_skip_across_processes(self, apps: AppFactory) -> None:
        """At-most-once releases the record before the body; with overlap="skip" no app starts the next run
        while one still runs, and the runs that came due meanwhile are skipped."""
        starts: list[tuple[str, float]] = []
        skipped: list[ev.SkippedOverlap] = []

        def make(label: str) -> Any:
            app = apps.app(poll_interval=S)
            app.on(ev.SkippedOverlap, skipped.append)

            @app.task(
                interval=timedelta(seconds=10),
                execution_mode=ExecutionMode.AT_MOST_ONCE,
                overlap="skip",
                lease_duration=timedelta(minutes=5),
            )
            async def long(context: Context) -> None:
                starts.append((label, offsets([context.scheduled_at])[0]))
                await pyncette.sleep(35)

            return app

        async with apps.run(make("a")), apps.run(make("b")):
            await apps.clock.advance(timedelta(seconds=127))  # the third run ends at 125 s
            # Asserted inside the block: a failure cancels the apps instead of waiting for their runs.
            assert [t for _, t in starts] == [10, 50, 90]
            assert [e.count for e in skipped] == [3, 3, 3]

    @requires("coordinated")
    @pytest.mark.realtime
    async def test_overlap_skip_across_real_processes(self, pyncette_backend: BackendUnderTest, tmp_path: Path) -> None:
        """Two OS processes run a task due every second whose runs take 2.5 s: no two runs ever overlap."""
        options = pyncette_backend.isolated_options()
        outputs = [tmp_path / f"out{i}.txt" for i in range(2)]
        workers = [_spawn(pyncette_backend, options, out, "overlap", seconds=60, work_seconds=2.5) for out in outputs]
        try:
            await _wait_ready(outputs)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _count(outputs) < 6:  # three runs started and ended
                await anyio.sleep(0.1)
        finally:
            _stop(workers)
        events = sorted(
            (float(at), kind, pid)
            for out in outputs
            if out.exists()
            for pid, kind, at in (line.split() for line in out.read_text().splitlines())
        )
        assert sum(kind == "end" for _, kind, _ in events) >= 3, events
        running = 0
        for _, kind, _ in events:
            running += 1 if kind == "start" else -1
            assert running <= 1, f"two runs overlapped: {events}"

    async def test_jitter_is_deterministic_and_bounded(self, apps: AppFactory) -> None:
        app = apps.app()
        started: dict[str, list[tuple[float, float]]] = {}

        @app.dynamic_task(interval=timedelta(minutes=1), jitter=timedelta(seconds=20))
        async def job(context: Context) -> None:
            started.setdefault(context.task.name, []).append(
                (offsets([context.scheduled_at])[0], offsets([apps.clock.now()])[0])
            )

        async with apps.run(app) as ctx:
            await ctx.schedule_tasks(job, {f"i{n}": {} for n in range(5)})
            await apps.clock.advance(timedelta(minutes=3))
        offsets_by_run = {(name, nominal): when - nominal for name, runs in started.items() for nominal, when in runs}
        assert offsets_by_run, "no run started"
        assert all(0 <= delay < 20 for delay in offsets_by_run.values())
        assert len({round(delay, 3) for delay in offsets_by_run.values()}) > 1  # spread, not all at once
        # Nominal times stay on the minute: jitter never drifts the cadence.
        assert all(nominal % 60 == 0 for _, nominal in offsets_by_run)

    async def test_describe_shows_next_runs_across_dst_and_the_last_run(self, apps: AppFactory) -> None:
        app = apps.app()
        tz = "Europe/Ljubljana"

        @app.dynamic_task(retry=Retry(attempts=3, backoff=timedelta(minutes=1)))
        async def job(context: Context) -> None:
            raise Boom("cannot reach redis://app:hunter2@cache:6379/0")

        async with apps.run(app) as ctx:
            # 02:30 does not exist on 2030-03-31 there (clocks jump from 02:00 to 03:00).
            await ctx.schedule_task(job, "nightly", schedule="30 2 * * *", timezone=tz)
            first = await ctx.describe_task(job, "nightly", next_runs=4)
            assert first is not None
            assert [t.strftime("%m-%d %H:%M %z") for t in first.next_runs] == [
                "01-01 02:30 +0100",
                "01-02 02:30 +0100",
                "01-03 02:30 +0100",
                "01-04 02:30 +0100",
            ]
            assert first.state.attempt == 1 and first.state.last_outcome is None
            await apps.clock.advance(timedelta(hours=1, minutes=30, seconds=10))  # 02:30 fails; retry at 02:31
            later = await ctx.describe_task(job, "nightly", next_runs=2)
            assert later is not None
            # The run being retried comes first (its scheduled time, not the retry's).
            assert [t.strftime("%m-%d %H:%M") for t in later.next_runs] == ["01-01 02:30", "01-02 02:30"]
            assert later.state.last_outcome == "failed" and later.state.attempt == 2
            assert later.state.scheduled_at.strftime("%H:%M") == "02:31"
            assert later.state.last_error is not None and "hunter2" not in later.state.last_error  # masked
            assert await ctx.describe_task(job, "gone") is None
            await ctx.schedule_task(job, "spring", schedule="30 2 * * *", timezone=tz, force=True)
            spring = await ctx.describe_task(job, "spring", next_runs=100)
        assert spring is not None
        around = [t.strftime("%m-%d %H:%M %z") for t in spring.next_runs if t.month == 3 and t.day >= 30]
        assert around == ["03-30 02:30 +0100", "03-31 03:00 +0200"]

    async def test_instance_policies_survive_storage(self, apps: AppFactory) -> None:
        app = apps.app()

        @app.dynamic_task(retry=Retry(attempts=4, retry_on=(Boom,)))
        async def job(context: Context) -> None:
            pass

        async with apps.run(app) as ctx:
            await ctx.schedule_task(
                job, "custom", interval=timedelta(hours=1), timeout=timedelta(seconds=7), overlap="skip"
            )
            state = await ctx.get_task(job, "custom")
        assert state is not None
        policies = state.task.policies
        assert policies.retry is not None and policies.retry.attempts == 4 and policies.retry.retry_on == (Boom,)
        assert policies.timeout == timedelta(seconds=7) and policies.overlap == "skip"

    @requires("persistent")
    async def test_attempt_survives_a_restart(self, apps: AppFactory) -> None:
        tries: list[tuple[int, float]] = []

        def make() -> Any:
            app = apps.app()

            @app.task(interval=timedelta(hours=1), retry=Retry(attempts=5, backoff=timedelta(minutes=1)))
            async def job(context: Context) -> None:
                tries.append((context.attempt, offsets([apps.clock.now()])[0] / 60))
                raise Boom("down")

            return app

        async with apps.run(make()):
            await apps.clock.advance(timedelta(hours=1, minutes=2))  # attempts 1 and 2 fail
        async with apps.run(make()):  # restarted between attempt 2 and 3
            await apps.clock.advance(timedelta(minutes=6))
        # Backoff 1, 2, 4 minutes: attempt 3 waits the 2 minutes after attempt 2, across the restart.
        assert tries == [(1, 60), (2, 61), (3, 63), (4, 67)]

    async def test_failing_listener_affects_nothing(self, apps: AppFactory) -> None:
        app = apps.app()
        seen: list[datetime] = []
        events: list[ev.Event] = []

        def broken(event: ev.Event) -> None:
            raise RuntimeError("listener bug")

        app.on(ev.Started, broken)
        app.on(ev.Event, events.append)

        @app.task(interval=timedelta(seconds=10))
        async def job(context: Context) -> None:
            seen.append(context.scheduled_at)

        @app.dynamic_task()
        async def once(context: Context) -> None:
            pass

        async with apps.run(app) as ctx:
            await ctx.schedule_task(once, "o", execute_at=START + 15 * S)
            await apps.clock.advance(timedelta(seconds=21))
        assert offsets(seen) == [10, 20]
        assert [(type(e).__name__, e.task.name) for e in events] == [
            ("Scheduled", "o"),
            ("Started", "job"),
            ("Succeeded", "job"),
            ("Started", "o"),
            ("Succeeded", "o"),
            ("Started", "job"),
            ("Succeeded", "job"),
        ]


__all__ = ["PolicySuite"]
