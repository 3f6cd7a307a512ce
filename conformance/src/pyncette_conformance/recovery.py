"""Conformance under failure: an app keeps every run exactly once while its storage connections are killed.

Real time and real servers on purpose. The connections are cut by the repository's own
:meth:`~pyncette.abc.Repository.kill_connections` testing hook (``CLIENT KILL ID``,
``pg_terminate_backend``, ``KILL``, closing sockets, ...); a backend without the hook has these tests
skipped, with that reason. A backend's test module may instead override two fixtures:

* ``kill_connections``: an async callable ``kill(ctx) -> int`` that cuts the app's server
  connections and returns how many it cut;
* ``recovery_options``: options merged over the isolated ones (e.g. to route the app through a proxy).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from pyncette import Context, Pyncette, PyncetteContext, Task

from .base import ConformanceBase
from .harness import BackendUnderTest, implements

KillConnections = Callable[[PyncetteContext], Awaitable[int]]

LEASE = timedelta(seconds=5)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` in real time until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await anyio.sleep(0.005)


async def count_instances(ctx: PyncetteContext, template: Task) -> int:
    """How many instances of ``template`` are stored (a committed once-off run is deleted)."""
    count, token = 0, None
    while True:
        page = await ctx.list_tasks(template, limit=1000, continuation_token=token)
        count += len(page.tasks)
        token = page.continuation_token
        if token is None:
            return count


def run_script_until_interrupted(path: Path, seconds: float = 12.0) -> subprocess.CompletedProcess[str]:
    """Run a Python script as a process, send SIGINT after ``seconds``, and collect its output.

    Used to run documentation snippets (``app.main()``) verbatim.
    """
    process = subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=path.parent
    )
    try:
        time.sleep(seconds)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, None)


class RecoverySuite(ConformanceBase):
    """Killed storage connections mid-run: nothing lost, nothing doubled, ``run()`` keeps going."""

    #: Once-off instances worked through; slow emulators may lower it (still enough to be cut mid-run).
    recovery_instances: ClassVar[int] = 3000

    @pytest.fixture
    async def kill_connections(self, pyncette_backend: BackendUnderTest) -> KillConnections:
        if not await implements(pyncette_backend, "kill_connections"):
            pytest.skip(
                f"backend {pyncette_backend.backend.name!r} does not implement the Repository.kill_connections "
                "testing hook (cut the repository's own server connections; see pyncette.abc)"
            )

        async def kill(ctx: PyncetteContext) -> int:
            return await ctx.repository.kill_connections()

        return kill

    @pytest.fixture
    def recovery_options(self) -> dict[str, Any]:
        return {}

    @pytest.mark.realtime
    async def test_app_survives_killed_connections(
        self,
        pyncette_backend: BackendUnderTest,
        kill_connections: KillConnections,
        recovery_options: dict[str, Any],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="pyncette")
        total = self.recovery_instances
        ran: Counter[str] = Counter()
        ticks: list[datetime] = []
        options = {**pyncette_backend.isolated_options(), **recovery_options}
        app = Pyncette(repository_factory=pyncette_backend.backend, poll_interval=timedelta(seconds=0.2), **options)

        @app.dynamic_task(lease_duration=LEASE)
        async def job(context: Context) -> None:
            ran[context.task.name] += 1

        @app.task(interval=timedelta(seconds=0.5), lease_duration=LEASE)
        async def ticker(context: Context) -> None:
            ticks.append(context.scheduled_at)

        names = [f"i{n}" for n in range(total)]
        async with app.create() as ctx:
            due = datetime.now(timezone.utc) - timedelta(seconds=1)
            await ctx.schedule_tasks(job, {name: {"execute_at": due} for name in names})
            async with anyio.create_task_group() as tg:
                await tg.start(ctx.run)
                await wait_for(lambda: sum(ran.values()) >= total // 20, 20, "the first runs")
                done_at_kill = sum(ran.values())
                killed = await kill_connections(ctx)
                await anyio.sleep(0.05)
                killed += await kill_connections(ctx)
                await wait_for(lambda: len(ran) == total, 60, "every instance to run")
                # A leased but uncommitted instance would run again: wait until none is stored.
                deadline = time.monotonic() + (LEASE * 3).total_seconds()
                while (left := await count_instances(ctx, job)) and time.monotonic() < deadline:
                    await anyio.sleep(0.2)
                assert left == 0, f"{left} instance(s) still stored after all ran"
                await anyio.sleep(0.5)  # room for a doubled run to show up
                ctx.shutdown()

        assert 0 < done_at_kill < total, "the kill did not happen mid-run"
        assert killed >= 1, "no connection of the app was killed"
        assert set(ran) == set(names)
        doubled = {name: n for name, n in ran.items() if n != 1}
        assert not doubled, f"{len(doubled)} instance(s) ran more than once: {list(doubled.items())[:10]}"
        assert ticks, "the static task never ran"
        assert len(ticks) == len(set(ticks)), f"static task ran twice for one schedule: {sorted(ticks)}"
        records = [r for r in caplog.records if r.name == "pyncette"]
        errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
        assert not errors, errors
        # A kill between two calls breaks only idle connections, which drivers replace silently; then
        # there is nothing to log, and every run having happened exactly once is the evidence.
        failed = [r.getMessage() for r in records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
        assert all("retrying" in message for message in failed), failed
