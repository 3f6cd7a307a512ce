"""Prometheus metrics: scrape the endpoint (real socket, port 0) while tasks run on a virtual clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pyncette import Context, FailureMode, Pyncette, PyncetteContext
from pyncette.abc import Completion, Lease, Record, RegisterMode, Repository
from pyncette.errors import BackendError
from pyncette.prometheus import InstrumentedRepository, metrics_for, use_prometheus
from pyncette.testing import VirtualClock, running

pytestmark = pytest.mark.anyio


async def scrape(port: int, method: str = "GET") -> tuple[int, str, str]:
    """One HTTP request to the metrics server; returns (status, head, body)."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(f"{method} /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), head, body


def value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in exposition text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def port_of(ctx: PyncetteContext) -> int:
    port: int = ctx.prometheus_port  # type: ignore[attr-defined]
    return port


def build(registry: CollectorRegistry) -> Pyncette:
    app = Pyncette(poll_interval=timedelta(seconds=1))
    use_prometheus(app, port=0, bind_address="127.0.0.1", registry=registry)

    @app.task(interval=timedelta(seconds=1))
    async def steady(context: Context) -> None:
        await anyio.lowlevel.checkpoint()

    @app.task(interval=timedelta(seconds=2), failure_mode=FailureMode.COMMIT)
    async def broken(context: Context) -> None:
        raise RuntimeError("always fails")

    @app.dynamic_task()
    async def orders(context: Context) -> None:
        if context.args.get("lose"):
            # Someone removes the instance while it runs: the heartbeat finds the lease lost.
            await context.app_context.unschedule_task(context.task)
            await context.heartbeat()

    return app


async def test_counters_move_as_tasks_run() -> None:
    registry = CollectorRegistry()
    app = build(registry)
    clock = VirtualClock()
    orders = next(t for t in app.tasks if t.name == "orders")
    async with app.create(clock=clock) as ctx, running(ctx):
        port = port_of(ctx)
        _, _, before = await scrape(port)
        assert value(before, "pyncette_task_runs_total", task="steady", outcome="success") == 0

        await ctx.schedule_task(orders, "a", interval=timedelta(seconds=1))
        await ctx.schedule_task(orders, "b", interval=timedelta(seconds=1))
        await ctx.schedule_task(orders, "lost", execute_at=clock.now(), lose=True)
        await clock.advance(5)
        status, head, text = await scrape(port)
        assert status == 200
        assert "Content-Type: text/plain; version=" in head

        assert value(text, "pyncette_task_runs_total", task="steady", outcome="success") == 5
        assert value(text, "pyncette_task_runs_total", task="broken", outcome="failure") == 2
        # Instances count under their template.
        assert value(text, "pyncette_task_runs_total", task="orders", outcome="success") == 10
        assert value(text, "pyncette_task_runs_total", task="orders", outcome="lease_lost") == 1
        assert value(text, "pyncette_leases_lost_total") == 1
        assert value(text, "pyncette_task_run_duration_seconds_count", task="steady") == 5
        assert value(text, "pyncette_task_start_lag_seconds_count", task="steady") == 5
        assert value(text, "pyncette_task_start_lag_seconds_sum", task="steady") == 0  # virtual time: no lag
        assert value(text, "pyncette_tasks_running", task="steady") == 0
        assert value(text, "pyncette_tick_duration_seconds_count") >= 5
        assert value(text, "pyncette_claimed_batch_size_count") >= 5
        assert value(text, "pyncette_claimed_batch_size_sum") == 5 + 2 + 10 + 1
        assert value(text, "pyncette_repository_call_duration_seconds_count", operation="claim") >= 5
        assert value(text, "pyncette_repository_call_duration_seconds_count", operation="commit") >= 1
        assert value(text, "pyncette_repository_call_duration_seconds_count", operation="register") == 4
        assert value(text, "pyncette_repository_errors_total", operation="claim") == 0

        await clock.advance(3)
        _, _, later = await scrape(port)
        assert value(later, "pyncette_task_runs_total", task="steady", outcome="success") == 8


async def test_start_lag_measures_late_starts() -> None:
    registry = CollectorRegistry()
    app = Pyncette(poll_interval=timedelta(seconds=1))
    use_prometheus(app, registry=registry)

    @app.dynamic_task()
    async def late(context: Context) -> None:
        pass

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        await ctx.schedule_task(late, "x", execute_at=clock.now() - timedelta(seconds=30))
        await clock.advance(1)
    assert registry.get_sample_value("pyncette_task_start_lag_seconds_sum", {"task": "late"}) == 30


class FailingClaims(Repository):
    """Fails the first ``failures`` claim calls with BackendError."""

    def __init__(self, inner: Repository, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        if self.failures > 0:
            self.failures -= 1
            raise BackendError("simulated outage")
        return await self.inner.claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        return await self.inner.register(records, now=now, mode=mode)

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        return await self.inner.commit(completions)

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        return await self.inner.unlock(leases)

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        return await self.inner.extend(lease, lease_until=lease_until)

    async def delete(self, parent: str, name: str) -> bool:
        return await self.inner.delete(parent, name)

    async def get(self, parent: str, name: str) -> Record | None:
        return await self.inner.get(parent, name)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        return await self.inner.list_page(parent, limit=limit, continuation=continuation)


async def test_backend_errors_counted_by_operation() -> None:
    registry = CollectorRegistry()
    app = Pyncette(poll_interval=timedelta(seconds=1))
    app.use_repository_wrapper(lambda repository: FailingClaims(repository, failures=3))
    use_prometheus(app, registry=registry)

    @app.task(interval=timedelta(seconds=1))
    async def steady(context: Context) -> None:
        pass

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        assert isinstance(ctx.repository, InstrumentedRepository)
        await clock.advance(10)
    assert registry.get_sample_value("pyncette_repository_errors_total", {"operation": "claim"}) == 3
    assert registry.get_sample_value("pyncette_repository_errors_total", {"operation": "register"}) is None
    runs = registry.get_sample_value("pyncette_task_runs_total", {"task": "steady", "outcome": "success"})
    assert runs is not None
    assert runs >= 1


async def test_metrics_server_refuses_other_methods_and_closes_with_the_app() -> None:
    app = Pyncette()
    use_prometheus(app, port=0, bind_address="127.0.0.1", registry=CollectorRegistry())
    async with app.create() as ctx:
        port = port_of(ctx)
        status, head, _ = await scrape(port, "POST")
        assert status == 405
        assert "Allow: GET, HEAD" in head
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


def test_metrics_are_shared_per_registry() -> None:
    registry = CollectorRegistry()
    first = use_prometheus(Pyncette(), registry=registry)
    second = use_prometheus(Pyncette(), registry=registry)
    assert first is second is metrics_for(registry)
    assert use_prometheus(Pyncette(), registry=CollectorRegistry()) is not first
    # The default registry works more than once too.
    assert use_prometheus(Pyncette()) is use_prometheus(Pyncette())


async def test_policy_events_are_counted() -> None:
    from pyncette import Retry

    registry = CollectorRegistry()
    app = Pyncette(poll_interval=timedelta(seconds=1))
    metrics = use_prometheus(app, measure_repository=False, measure_ticks=False, registry=registry)

    @app.task(interval=timedelta(seconds=10), retry=Retry(attempts=2, backoff=timedelta(seconds=1)))
    async def flaky(context: Context) -> None:
        raise RuntimeError("down")

    @app.task(
        interval=timedelta(seconds=1), timeout=timedelta(seconds=5), overlap="skip", failure_mode=FailureMode.COMMIT
    )
    async def slow(context: Context) -> None:
        await pyncette_sleep(7)

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(timedelta(seconds=12))
        count = metrics.policy_events.labels
        assert count("flaky", "retrying")._value.get() == 1  # attempt 1 at 10 s, attempt 2 at 11 s
        assert count("flaky", "exhausted")._value.get() == 1
        # slow: runs at 1 s and times out at 6 s (the runs due at 2..6 s are skipped), again at 7 s and 12 s.
        assert count("slow", "timed_out")._value.get() == 2
        assert count("slow", "skipped_overlap")._value.get() == 10


async def pyncette_sleep(seconds: float) -> None:
    from pyncette import sleep

    await sleep(seconds)
