"""Conformance for shared storage: persistence, isolation and coordination of several instances."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

import pyncette
from pyncette import Context, Pyncette
from pyncette.testing import running

from .base import ConformanceBase, requires
from .behaviour import START, AppFactory, offsets
from .harness import BackendUnderTest

#: Real-time tests schedule work in the past so it is due at once.
PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)


class PersistenceSuite(ConformanceBase):
    """State survives closing and reopening the app (backends declaring ``persistent``)."""

    @requires("persistent")
    async def test_instances_and_their_state_survive_reopening(self, apps: AppFactory) -> None:
        def build() -> tuple[Pyncette, Any]:
            app = apps.app()

            @app.dynamic_task()
            async def job(context: Context) -> None:
                pass

            return app, job

        app, job = build()
        async with app.create(clock=apps.clock) as ctx:
            await ctx.schedule_task(job, "kept", interval=timedelta(minutes=5), payload={"a": [1, 2]})
            await ctx.schedule_task(job, "removed", interval=timedelta(minutes=5))
            await ctx.unschedule_task(job, "removed")
        app, job = build()
        async with app.create(clock=apps.clock) as ctx:
            state = await ctx.get_task(job, "kept")
            assert state is not None
            assert state.task.extra_args == {"payload": {"a": [1, 2]}}
            assert state.task.interval == timedelta(minutes=5)
            assert offsets([state.scheduled_at]) == [300]
            assert await ctx.get_task(job, "removed") is None


class IsolationSuite(ConformanceBase):
    """Two apps pointed at different namespaces of the same server never see each other's tasks."""

    async def test_namespaces_are_isolated(self, pyncette_backend: BackendUnderTest) -> None:
        first, second = AppFactory(pyncette_backend), AppFactory(pyncette_backend)
        second.clock = first.clock
        seen: dict[str, list[str]] = {"first": [], "second": []}

        def build(apps: AppFactory, label: str) -> tuple[Pyncette, Any]:
            app = apps.app()

            @app.dynamic_task()
            async def job(context: Context) -> None:
                seen[label].append(context.task.name)

            @app.task(interval=timedelta(seconds=10))
            async def static(context: Context) -> None:
                seen[label].append("static")

            return app, job

        app1, job1 = build(first, "first")
        app2, job2 = build(second, "second")
        async with app1.create(clock=first.clock) as ctx1, app2.create(clock=first.clock) as ctx2:
            await ctx1.schedule_tasks(job1, {f"a{i}": {"execute_at": START} for i in range(5)})
            assert (await ctx2.list_tasks(job2)).tasks == []
            assert await ctx2.get_task(job2, "a0") is None
            async with running(ctx1), running(ctx2):
                await first.clock.advance(timedelta(seconds=10))
        assert sorted(seen["first"]) == ["a0", "a1", "a2", "a3", "a4", "static"]
        assert seen["second"] == ["static"]


class CoordinationSuite(ConformanceBase):
    """Several app instances on one storage: every due run happens exactly once."""

    @requires("coordinated")
    @pytest.mark.parametrize("instances", [2, 4])
    async def test_due_instances_run_exactly_once_across_apps(self, apps: AppFactory, instances: int) -> None:
        executed: Counter[str] = Counter()
        by_app: Counter[int] = Counter()
        names = [f"job-{i}" for i in range(2000)]

        def build(index: int) -> tuple[Pyncette, Any]:
            app = apps.app(batch_size=50, concurrency_limit=60)

            @app.dynamic_task(lease_duration=timedelta(seconds=600))
            async def job(context: Context) -> None:
                executed[context.task.name] += 1
                by_app[index] += 1
                # A second of (virtual) work each: the backlog outlasts several polls, so every app takes a share.
                await pyncette.sleep(1)

            return app, job

        built = [build(i) for i in range(instances)]
        async with anyio.create_task_group() as tg:
            contexts = []
            for app, _ in built:
                ctx = await tg.start(_serve, app, apps)
                contexts.append(ctx)
            # Registered from a context that does not run: every app finds the work at its next poll, at the
            # same moment, and they race for it (instead of the first app to start taking it all).
            async with built[0][0].create(clock=apps.clock) as admin:
                await admin.schedule_tasks(built[0][1], {n: {"execute_at": START} for n in names})
            await apps.clock.advance(timedelta(seconds=10))
            for _ in range(200):
                if sum(executed.values()) >= len(names) or any(count > 1 for count in executed.values()):
                    break
                await apps.clock.advance(timedelta(seconds=1))
            await apps.clock.advance(timedelta(seconds=2))  # the last runs finish their second of work
            for ctx in contexts:
                ctx.shutdown()
            # A broken backend may have handed out more runs meanwhile: the apps drain them before they stop.
            await apps.clock.advance(timedelta(seconds=2))
        assert set(executed) == set(names), f"missing: {sorted(set(names) - set(executed))[:10]}"
        doubled = [n for n, count in executed.items() if count > 1]
        assert doubled == [], f"ran more than once: {doubled[:10]}"
        assert len(by_app) >= 2, f"work was not shared: {dict(by_app)}"

    @requires("coordinated")
    async def test_static_task_runs_once_per_point_across_apps(self, apps: AppFactory) -> None:
        executed: list[float] = []

        def build() -> Pyncette:
            app = apps.app()

            @app.task(interval=timedelta(seconds=10))
            async def tick(context: Context) -> None:
                executed.append((context.scheduled_at - START).total_seconds())

            return app

        async with anyio.create_task_group() as tg:
            contexts = [await tg.start(_serve, build(), apps) for _ in range(4)]
            await apps.clock.advance(timedelta(seconds=100))
            for ctx in contexts:
                ctx.shutdown()
        assert sorted(executed) == [10.0 * i for i in range(1, 11)]

    @requires("coordinated")
    @pytest.mark.realtime
    async def test_separate_processes_share_work_exactly_once(
        self, pyncette_backend: BackendUnderTest, tmp_path: Path
    ) -> None:
        options = pyncette_backend.isolated_options()
        names = [f"p{i}" for i in range(2000)]
        app = Pyncette(repository_factory=pyncette_backend.backend, **options)

        @app.dynamic_task(lease_duration=timedelta(seconds=30))
        async def job(context: Context) -> None:
            pass

        outputs = [tmp_path / f"out{i}.txt" for i in range(2)]
        # A little work per run, so that both processes are still busy when the other one polls.
        workers = [
            _spawn(pyncette_backend, options, out, "drain", seconds=300, lease=30, work_seconds=0.002)
            for out in outputs
        ]
        try:
            await _wait_ready(outputs)
            async with app.create() as ctx:
                await ctx.schedule_tasks(job, {n: {"execute_at": PAST} for n in names})
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and _count(outputs) < len(names):
                await anyio.sleep(0.2)
        finally:
            _stop(workers)
        lines = [line.split() for out in outputs if out.exists() for line in out.read_text().splitlines()]
        counts = Counter(name for _, name in lines)
        assert set(counts) == set(names), f"missing: {sorted(set(names) - set(counts))[:10]}"
        assert [n for n, c in counts.items() if c > 1] == []

    @requires("coordinated")
    @pytest.mark.realtime
    async def test_killed_worker_is_taken_over_after_lease_expiry(
        self, pyncette_backend: BackendUnderTest, tmp_path: Path
    ) -> None:
        options = pyncette_backend.isolated_options()
        app = Pyncette(repository_factory=pyncette_backend.backend, **options)

        @app.dynamic_task(lease_duration=timedelta(seconds=2))
        async def job(context: Context) -> None:
            pass

        async with app.create() as ctx:
            await ctx.schedule_task(job, "victim", execute_at=PAST)
        first_out, second_out = tmp_path / "first.txt", tmp_path / "second.txt"
        first = _spawn(pyncette_backend, options, first_out, "hang", seconds=60, lease=2)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _count([first_out]) < 1:
                await anyio.sleep(0.05)
            assert _count([first_out]) == 1, "the first worker never started the task"
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        killed_at = time.monotonic()
        second = _spawn(pyncette_backend, options, second_out, "hang", seconds=60, lease=2)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _count([second_out]) < 1:
                await anyio.sleep(0.05)
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait(timeout=10)
        assert _count([second_out]) == 1, "the task was not taken over after the lease expired"
        assert time.monotonic() - killed_at < 30


async def _serve(app: Pyncette, apps: AppFactory, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    async with app.create(clock=apps.clock) as ctx, anyio.create_task_group() as tg:
        await tg.start(ctx.run)
        task_status.started(ctx)


def _spawn(
    under_test: BackendUnderTest, options: dict[str, Any], out: Path, mode: str, **extra: Any
) -> subprocess.Popen[bytes]:
    spec = {"backend": under_test.backend.name, "options": options, "out": str(out), "mode": mode, **extra}
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "pyncette_conformance._worker", json.dumps(spec)], env=env)


async def _wait_ready(outputs: list[Path]) -> None:
    """Wait until every worker process spawned to write to ``outputs`` is connected and about to poll."""
    deadline = time.monotonic() + 60
    while not all(Path(f"{out}.ready").exists() for out in outputs):
        assert time.monotonic() < deadline, "the worker processes did not start"
        await anyio.sleep(0.05)


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop the worker processes gracefully (SIGTERM) and wait for them."""
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=30)


def _count(outputs: list[Path]) -> int:
    return sum(len(out.read_text().splitlines()) for out in outputs if out.exists())
