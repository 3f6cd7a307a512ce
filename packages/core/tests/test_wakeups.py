"""Wake-ups between apps of one process (the memory backend pushes them): coalesced, and a broken source
costs nothing but latency."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from pyncette import Context, Pyncette
from pyncette.abc import Repository
from pyncette.errors import BackendError
from pyncette.memory import MemoryRepository
from pyncette.testing import running, shared_repository

pytestmark = [pytest.mark.anyio, pytest.mark.realtime]


def pair(repository: Repository, ticks: list[float]) -> tuple[Pyncette, Pyncette, list[str], Any]:
    worker = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=60))
    registrar = Pyncette(repository_factory=shared_repository(repository))
    ran: list[str] = []

    @worker.dynamic_task(name="job")
    async def job(context: Context) -> None:
        ran.append(context.task.name)

    @registrar.dynamic_task(name="job")
    async def scheduled(context: Context) -> None:
        pass

    worker.use_tick_listener(lambda ctx, seconds: ticks.append(seconds))
    return worker, registrar, ran, scheduled


async def test_a_flood_of_hints_wakes_the_loop_a_few_times() -> None:
    ticks: list[float] = []
    worker, registrar, ran, scheduled = pair(MemoryRepository(), ticks)
    now = datetime.now(timezone.utc)
    async with worker.create() as w, running(w), registrar.create() as r:
        with anyio.fail_after(5):  # until the worker listens: an instance registered now starts at once
            while not ran:
                await r.schedule_task(scheduled, f"warm{len(ticks)}", execute_at=now)
                await anyio.sleep(0.01)
        ran.clear()
        before = len(ticks)
        start = time.monotonic()
        for n in range(1000):  # one register call (one hint) each
            await r.schedule_task(scheduled, f"i{n}", execute_at=now)
        with anyio.move_on_after(10):
            while len({n for n in ran if n.startswith("i")}) < 1000:
                await anyio.sleep(0.005)
        assert len({n for n in ran if n.startswith("i")}) == 1000, f"{len(ran)} ran; ticks {len(ticks)}"
        took = time.monotonic() - start
    # 1,000 hints in `took` seconds: at most one wake per 5 ms window (plus ticks for full batches).
    assert len(ticks) - before <= took / 0.005 + 1000 / 100 + 5


class Unreliable(MemoryRepository):
    """A wake-up source that fails the first two times it is opened."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0

    def wakeups(self) -> Any:
        self.opened += 1
        if self.opened <= 2:

            @contextlib.asynccontextmanager
            async def broken() -> AsyncIterator[AsyncIterator[datetime]]:
                raise BackendError("cannot subscribe")
                yield  # pragma: no cover

            return broken()
        return super().wakeups()


async def test_a_failing_source_is_opened_again() -> None:
    repository = Unreliable()
    worker, registrar, ran, scheduled = pair(repository, [])
    async with worker.create() as w, running(w), registrar.create() as r:
        with anyio.fail_after(5):
            while repository.opened < 3:  # the availability probe and a failure, then a working one
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            await r.schedule_task(scheduled, "late", execute_at=datetime.now(timezone.utc))
            while "late" not in ran:
                await anyio.sleep(0.005)
