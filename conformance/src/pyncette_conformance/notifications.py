"""Wake-ups pushed between processes (``Capabilities.notifications``), on real time: the point is latency.

Two apps share the storage: a *worker* that runs a dynamic template with a long ``poll_interval``, and a
*registrar* that only schedules instances, as a web app would. Work the registrar schedules, due now, must
start in the worker well before the next poll; after the worker's connections are cut, work must still
start within one ``poll_interval`` and the wake-ups must come back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from pyncette import Context, Pyncette, PyncetteContext
from pyncette.testing import running

from .base import ConformanceBase, requires
from .harness import BackendUnderTest

#: How soon pushed work must start (the worker polls far less often).
BOUND = 1.0


class _Pair:
    def __init__(self, under_test: BackendUnderTest, poll: float) -> None:
        options = under_test.isolated_options()
        self.started: dict[str, float] = {}
        self.worker = Pyncette(repository_factory=under_test.backend, poll_interval=timedelta(seconds=poll), **options)
        self.registrar = Pyncette(repository_factory=under_test.backend, **options)
        self.job = self._template(self.worker, self.started.setdefault)
        self.scheduled = self._template(self.registrar, lambda name, at: at)

    @staticmethod
    def _template(app: Pyncette, seen: Callable[[str, float], Any]) -> Any:
        @app.dynamic_task(name="job")
        async def job(context: Context) -> None:
            seen(context.task.name, time.monotonic())

        return job

    @asynccontextmanager
    async def running(self) -> AsyncIterator[tuple[PyncetteContext, PyncetteContext]]:
        async with self.worker.create() as worker, running(worker), self.registrar.create() as registrar:
            yield worker, registrar

    async def lag(self, registrar: PyncetteContext, name: str, limit: float) -> float | None:
        """Schedule ``name`` due now; seconds until the worker started it (``None``: not within ``limit``)."""
        sent = time.monotonic()
        await registrar.schedule_task(self.scheduled, name, execute_at=datetime.now(timezone.utc))
        with anyio.move_on_after(limit):
            while name not in self.started:
                await anyio.sleep(0.002)
        return self.started[name] - sent if name in self.started else None

    async def until_fast(self, registrar: PyncetteContext, prefix: str, within: float) -> float | None:
        """Schedule instances until one starts within :data:`BOUND` (the wake-ups work), for ``within`` s."""
        deadline = time.monotonic() + within
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            lag = await self.lag(registrar, f"{prefix}{attempt}", BOUND)
            if lag is not None:
                return lag
        return None


@requires("notifications")
@pytest.mark.realtime
class NotificationSuite(ConformanceBase):
    """Work registered by one app starts in another within milliseconds, and survives lost connections."""

    async def test_work_registered_elsewhere_starts_before_the_next_poll(
        self, pyncette_backend: BackendUnderTest
    ) -> None:
        pair = _Pair(pyncette_backend, poll=60)
        async with pair.running() as (_, registrar):
            assert await pair.until_fast(registrar, "warm", within=10) is not None, "no wake-up arrived"
            lags = [await pair.lag(registrar, f"i{n}", BOUND) for n in range(10)]
        assert all(lag is not None for lag in lags), lags

    async def test_cut_connections_lose_no_work(self, pyncette_backend: BackendUnderTest) -> None:
        async with pyncette_backend.repository() as probe:
            try:
                await probe.kill_connections()
            except NotImplementedError:
                pytest.skip("backend does not implement the Repository.kill_connections testing hook")
        pair = _Pair(pyncette_backend, poll=2)
        async with pair.running() as (worker, registrar):
            assert await pair.until_fast(registrar, "warm", within=10) is not None, "no wake-up arrived"
            await worker.repository.kill_connections()
            # Found by the next poll at the latest, whatever became of the wake-up connection.
            assert await pair.lag(registrar, "after-cut", 2 + 3) is not None
            # And the wake-ups come back.
            assert await pair.until_fast(registrar, "again", within=40) is not None, "wake-ups did not resume"


__all__ = ["NotificationSuite"]
