"""Lost connections and server crashes: recovered from quietly, nothing lost or doubled.

The shared server's connections are only ever cut for this test's own repositories (the
``kill_connections`` hook, or an application_name unique to the test); the crash test kills a private
server of its own (see ``private_postgres`` in conftest.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import asyncpg
import pytest

from pyncette import Context, Pyncette, PyncetteContext, Task
from pyncette.abc import Record, RegisterMode, Repository
from pyncette.errors import BackendError
from pyncette_conformance.servers import PostgresServer
from pyncette_postgres import PostgresRepository, backend

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def rec(name: str) -> Record:
    return Record(parent="p", name=name, spec="{}", scheduled_at=T0)


def open_repository(**options: Any) -> AbstractAsyncContextManager[Repository]:
    return backend.open(backend.settings(options))


@pytest.fixture
async def table(postgres_url: str) -> AsyncIterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    await backend.purge(backend.settings({"postgres_url": postgres_url, "postgres_table_name": name}))


async def app_pids(admin: asyncpg.Connection, application_name: str) -> set[int]:
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name)
    return {row["pid"] for row in rows}


async def claim_after_a_kill(repo: Repository) -> int:
    """Claim until it works; return how many attempts failed (the pool must recover after at most one)."""
    failures = 0
    for _attempt in range(5):
        try:
            await repo.claim("p", now=T0, limit=1, lease_until=T0 + timedelta(seconds=1), token="x")
        except BackendError:
            failures += 1
            continue
        return failures
    pytest.fail("repository did not recover after its connections were killed")


async def stored(ctx: PyncetteContext, template: Task) -> int:
    """How many instances of ``template`` are stored (a finished once-off run is deleted)."""
    count, token = 0, None
    while True:
        page = await ctx.list_tasks(template, limit=1000, continuation_token=token)
        count += len(page.tasks)
        token = page.continuation_token
        if token is None:
            return count


def assert_quiet(records: list[logging.LogRecord], *, allow_retry_warnings: bool = True) -> None:
    """No traceback, no ERROR and nothing from asyncpg in the logs; at most one WARNING of this backend."""
    shown = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in records]
    assert not [r for r in records if r.exc_info or r.exc_text], shown
    assert not [r for r in records if r.levelno >= logging.ERROR], shown
    assert not [r for r in records if r.name.startswith(("asyncpg", "asyncio"))], shown
    assert len([r for r in records if r.name.startswith("pyncette_postgres") and r.levelno >= logging.WARNING]) <= 1
    others = [r for r in records if r.name == "pyncette" and r.levelno >= logging.WARNING]
    if allow_retry_warnings:
        # A retried storage call, or the wake-up connection opened again (the loop polls meanwhile).
        assert all("retrying" in r.getMessage() or "polling meanwhile" in r.getMessage() for r in others), shown
    else:
        assert not others, shown


# --- the kill_connections hook -----------------------------------------------------------------------


async def test_kill_connections_cuts_only_the_repositorys_own(
    postgres_url: str, table: str, admin: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Both repositories use one application_name: the hook must tell their connections apart anyway.
    shared_name = "pyncette-twins-" + uuid.uuid4().hex[:8]
    common = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_application_name": shared_name}
    async with (
        open_repository(**common, postgres_pool_min_size=3) as first,
        open_repository(**common, postgres_pool_min_size=2) as second,
    ):
        assert isinstance(first, PostgresRepository) and isinstance(second, PostgresRepository)
        await first.register([rec(f"r{i}") for i in range(5)], now=T0, mode=RegisterMode.CREATE)
        before = await app_pids(admin, shared_name)
        assert len(before) == 5
        admin_pid = admin.get_server_pid()
        assert await first.kill_connections() == 3
        survivors = await app_pids(admin, shared_name)
        assert len(survivors) == 2 and survivors < before
        assert admin_pid in {row["pid"] for row in await admin.fetch("SELECT pid FROM pg_stat_activity")}
        assert await admin.fetchval("SELECT 1") == 1
        # The other repository never noticed; the killed one recovers at once.
        assert await second.get("p", "r0") is not None
        assert await claim_after_a_kill(first) <= 1
        assert await first.kill_connections() >= 1  # the replacement connections are known too
        assert await claim_after_a_kill(first) <= 1
    assert await app_pids(admin, shared_name) == set()
    assert_quiet(caplog.records, allow_retry_warnings=False)


async def test_kill_connections_with_no_open_connection(postgres_url: str, table: str) -> None:
    async with open_repository(postgres_url=postgres_url, postgres_table_name=table, postgres_pool_min_size=0) as repo:
        assert isinstance(repo, PostgresRepository)
        await repo.kill_connections()  # the table check at start-up may have left one open
        assert await repo.kill_connections() == 0


async def test_killed_connections_are_survived_quietly(
    postgres_url: str, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    options = {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_pool_min_size": 2}
    async with open_repository(**options) as repo:
        await repo.register([rec(f"r{i}") for i in range(10)], now=T0, mode=RegisterMode.CREATE)
        for _ in range(3):  # kill repeatedly: each time the pool must replace its connections
            assert await repo.kill_connections() >= 1
            await asyncio.sleep(0.2)  # the pool would reconnect in the background now, if it did
            assert await claim_after_a_kill(repo) <= 1
        assert (await repo.get("p", "r0")) is not None
    gc.collect()  # "exception never retrieved" is logged when the future is collected
    assert_quiet(caplog.records, allow_retry_warnings=False)


async def test_call_on_a_connection_killed_mid_query_raises_backend_error(
    postgres_url: str, table: str, admin: asyncpg.Connection
) -> None:
    app = "pyncette-mid-" + uuid.uuid4().hex[:8]
    options = {
        "postgres_url": postgres_url,
        "postgres_table_name": table,
        "postgres_application_name": app,
        "postgres_pool_max_size": 1,
    }
    async with open_repository(**options) as repo:
        assert isinstance(repo, PostgresRepository)
        await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        # Hold a row lock from outside so the repository's next write blocks server-side.
        async with admin.transaction():
            await admin.execute(f'SELECT 1 FROM "{table}" WHERE name = $1 FOR UPDATE', "a")
            blocked = asyncio.ensure_future(repo.delete("p", "a"))
            for _ in range(50):
                waiting = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    app,
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
            assert await repo.kill_connections() == 1
            with pytest.raises(BackendError):
                await blocked
        assert await repo.delete("p", "a") is True


# --- a real crash ------------------------------------------------------------------------------------


@pytest.mark.realtime
async def test_app_survives_a_server_crash_and_restart(
    private_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL the postmaster mid-run, start it again: every run happens once, and the logs stay quiet."""
    caplog.set_level(logging.DEBUG)
    total, lease = 1500, timedelta(seconds=3)
    ran: Counter[str] = Counter()
    ticks: list[datetime] = []
    app = Pyncette(
        repository_factory=backend,
        poll_interval=timedelta(seconds=0.2),
        postgres_url=private_postgres.url,
        postgres_pool_min_size=2,
        postgres_connect_timeout=2,
    )

    @app.dynamic_task(lease_duration=lease)
    async def job(context: Context) -> None:
        ran[context.task.name] += 1
        await anyio.sleep(0.001)

    @app.task(interval=timedelta(seconds=0.5), lease_duration=lease)
    async def ticker(context: Context) -> None:
        ticks.append(context.scheduled_at)

    names = [f"i{n}" for n in range(total)]
    started = time.monotonic()
    async with app.create() as ctx:
        due = datetime.now(timezone.utc) - timedelta(seconds=1)
        await ctx.schedule_tasks(job, {name: {"execute_at": due} for name in names})
        async with anyio.create_task_group() as tg:
            await tg.start(ctx.run)
            deadline = time.monotonic() + 20
            while sum(ran.values()) < total // 10:
                assert time.monotonic() < deadline, "the first runs did not happen"
                await anyio.sleep(0.005)
            done_at_crash = sum(ran.values())
            mark = len(caplog.records)
            await anyio.to_thread.run_sync(private_postgres.kill)
            await anyio.sleep(1.0)  # down for a while: calls fail, nothing may reconnect in a loop
            await anyio.to_thread.run_sync(private_postgres.start)
            deadline = time.monotonic() + 20
            while len(ran) < total or (left := await stored(ctx, job)):
                assert time.monotonic() < deadline, f"{total - len(ran)} not run, {left} still stored"
                await anyio.sleep(0.1)
            await anyio.sleep(0.5)  # room for a doubled run to show up
            ctx.shutdown()
    gc.collect()
    assert 0 < done_at_crash < total, "the crash did not happen mid-run"
    assert set(ran) == set(names)
    doubled = {name: n for name, n in ran.items() if n != 1}
    assert not doubled, f"{len(doubled)} instance(s) ran more than once: {list(doubled.items())[:10]}"
    assert ticks and len(ticks) == len(set(ticks)), sorted(ticks)
    assert_quiet(caplog.records[mark:])
    assert time.monotonic() - started < 30
