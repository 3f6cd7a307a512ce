"""Whole apps on Redis: the seed documentation snippet runs verbatim as a process, and an app survives
its server crashing and coming back.

The app-level killed-connections test lives in test_conformance.py (pyncette_conformance.RecoverySuite).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio

from pyncette import Context, Pyncette
from pyncette.testing import DEFAULT_START as START
from pyncette.testing import VirtualClock, running
from pyncette_conformance import run_script_until_interrupted
from pyncette_conformance.recovery import count_instances, wait_for
from pyncette_conformance.servers import RedisServer
from pyncette_redis import backend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the seed's snippets ----------------------------------------------------------------------

SEED_SCRIPT = """\
from pyncette import Pyncette, Context
from pyncette.redis import redis_repository

{app_line}

@app.task(schedule='* * * * * */10')
async def foo(context: Context):
    print('This will run every 10 seconds')

if __name__ == '__main__':
    app.main()
"""

SEED_APPS = {
    "plain": "app = Pyncette(repository_factory=redis_repository, redis_url='redis://localhost')",
    "namespaced": (
        "app = Pyncette(repository_factory=redis_repository, redis_url='redis://localhost', "
        "redis_namespace='my_super_app')"
    ),
}


@pytest.mark.parametrize("variant", sorted(SEED_APPS))
async def test_seed_snippet_runs(variant: str, redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "seed_app.py"
    script.write_text(SEED_SCRIPT.format(app_line=SEED_APPS[variant]))
    purge_options: dict[str, Any] = {"redis_url": "redis://localhost"}
    if variant == "namespaced":
        purge_options["redis_namespace"] = "my_super_app"
    try:
        done = await anyio.to_thread.run_sync(run_script_until_interrupted, script)
    finally:
        await backend.purge(backend.settings(purge_options))
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout


# --- a crashed and restarted server while an app runs ---------------------------------------


async def test_app_survives_a_killed_and_restarted_server(
    private_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 the app's (private) server mid-run and start it again: no run lost, none doubled.

    Real time on purpose (the server's crash is real); bounded by the waits below.
    """
    caplog.set_level(logging.WARNING, logger="pyncette")
    total = 400
    ran: Counter[str] = Counter()
    ticks: list[datetime] = []
    lease = timedelta(seconds=10)
    app = Pyncette(
        repository_factory=backend,
        redis_url=private_server.url,
        redis_connect_timeout=1,
        redis_timeout=2,
        poll_interval=timedelta(seconds=0.2),
    )

    @app.dynamic_task(lease_duration=lease)
    async def job(context: Context) -> None:
        ran[context.task.name] += 1
        await anyio.sleep(0.002)

    @app.task(interval=timedelta(seconds=0.5), lease_duration=lease)
    async def ticker(context: Context) -> None:
        ticks.append(context.scheduled_at)

    names = [f"i{n}" for n in range(total)]
    async with app.create() as ctx:
        due = datetime.now(timezone.utc) - timedelta(seconds=1)
        await ctx.schedule_tasks(job, {name: {"execute_at": due} for name in names})
        async with anyio.create_task_group() as tg:
            await tg.start(ctx.run)
            await wait_for(lambda: sum(ran.values()) >= total // 10, 20, "the first runs")
            private_server.kill()
            done_at_kill = sum(ran.values())
            await anyio.sleep(0.3)
            ticks_before_restart = len(ticks)
            await anyio.to_thread.run_sync(private_server.start)
            await wait_for(lambda: len(ran) == total, 60, "every instance to run")
            await wait_for(lambda: len(ticks) > ticks_before_restart + 2, 20, "the static task after the restart")
            deadline = time.monotonic() + 3 * lease.total_seconds()
            while (left := await count_instances(ctx, job)) and time.monotonic() < deadline:
                await anyio.sleep(0.2)
            assert left == 0, f"{left} instance(s) still stored after all ran"
            await anyio.sleep(0.5)  # room for a doubled run to show up
            ctx.shutdown()

    assert 0 < done_at_kill < total, "the kill did not happen mid-run"
    assert set(ran) == set(names)
    doubled = {name: n for name, n in ran.items() if n != 1}
    assert not doubled, f"{len(doubled)} instance(s) ran more than once: {list(doubled.items())[:10]}"
    assert len(ticks) == len(set(ticks)), f"static task ran twice for one schedule: {sorted(ticks)}"
    records = [r for r in caplog.records if r.name == "pyncette"]
    assert not [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    # The app noticed the crash (and retried), so the test did cut it off.
    assert any("retrying" in r.getMessage() for r in records if r.levelno == logging.WARNING)


# --- the reported corrupt-record failure, end to end -------------------------------------------


@pytest.mark.parametrize("garbage", ["{not json", '{"s": "soon"}'])
async def test_garbage_in_a_record_stops_nothing_else(redis_url: str, garbage: str) -> None:
    """Garbage in one instance's stored value (or its time): the other instances of that template,
    another template and the every-second static task keep running (virtual clock)."""
    namespace = "t" + uuid.uuid4().hex[:12]
    options: dict[str, Any] = {"redis_url": redis_url, "redis_namespace": namespace}
    clock = VirtualClock(START)
    app = Pyncette(repository_factory=backend, poll_interval=timedelta(seconds=1), **options)
    ran: Counter[str] = Counter()
    ticks: list[datetime] = []

    @app.dynamic_task()
    async def first(context: Context) -> None:
        ran[context.task.name] += 1

    @app.dynamic_task()
    async def second(context: Context) -> None:
        ran["second/" + context.task.name] += 1

    @app.task(schedule="* * * * * *")
    async def every_second(context: Context) -> None:
        ticks.append(context.scheduled_at)

    try:
        async with app.create(clock=clock) as ctx:
            every = timedelta(seconds=5)
            await ctx.schedule_tasks(first, {n: {"interval": every} for n in ("a", "bad", "c")})
            await ctx.schedule_task(second, "x", interval=every)
            parent, name = first.instance_key("bad")
            base = f"pyncette:{{{namespace}:{parent.encode().hex()}}}"
            admin = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
            try:
                await admin.hset(f"{base}:rec", name, garbage)
            finally:
                await admin.aclose()
            async with running(ctx):
                await clock.advance(timedelta(seconds=30))
            assert ran["a"] >= 5 and ran["c"] >= 5 and ran["second/x"] >= 5, ran
            assert "bad" not in ran
            assert len(ticks) >= 29 and len(set(ticks)) == len(ticks)
            stored = await ctx.repository.get(parent, name)
            assert stored is not None and stored.corrupt
    finally:
        await backend.purge(backend.settings(options))
