"""End to end on the real server: a whole app survives killed connections, and the seed snippet runs."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from pyncette import Context, Pyncette
from pyncette.runtime import PyncetteContext
from pyncette.task import Task
from pyncette_mysql import MySQLRepository, backend, mysql_repository

pytestmark = pytest.mark.anyio

INSTANCES = 3000
LEASE = timedelta(seconds=5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def options(mysql_options: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    opts: dict[str, Any] = {**mysql_options, "mysql_table_name": "app_" + uuid.uuid4().hex[:12]}
    try:
        yield opts
    finally:
        await backend.purge(opts)


async def query(conn: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cursor:
        await cursor.execute(sql, args or None)
        return list(await cursor.fetchall())


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await anyio.sleep(0.005)


async def remaining_instances(ctx: PyncetteContext, template: Task) -> int:
    """How many instances of ``template`` are still stored (committed once-off runs are deleted)."""
    count, token = 0, None
    while True:
        page = await ctx.list_tasks(template, limit=1000, continuation_token=token)
        count += len(page.tasks)
        token = page.continuation_token
        if token is None:
            return count


async def run_app_and_kill(
    app: Pyncette, template: Task, ran: Counter[str], kill: Callable[[PyncetteContext], Awaitable[int]]
) -> tuple[int, int]:
    """Schedule INSTANCES once-off runs due now, run the app, kill its connections twice mid-run.

    Returns (runs done when the first kill happened, connections killed). The app runs until every
    instance ran and none is left in storage (a leased but uncommitted one would run again).
    """
    names = [f"i{n}" for n in range(INSTANCES)]
    async with app.create() as ctx:
        due = datetime.now(timezone.utc) - timedelta(seconds=1)
        await ctx.schedule_tasks(template, {name: {"execute_at": due} for name in names})
        async with anyio.create_task_group() as tg:
            await tg.start(ctx.run)
            await wait_for(lambda: sum(ran.values()) >= INSTANCES // 20, 20, "the first runs")
            done_at_kill = sum(ran.values())
            killed = await kill(ctx)
            await anyio.sleep(0.05)
            killed += await kill(ctx)
            await wait_for(lambda: len(ran) == INSTANCES, 60, "every instance to run")
            deadline = time.monotonic() + (LEASE * 3).total_seconds()
            while (left := await remaining_instances(ctx, template)) and time.monotonic() < deadline:
                await anyio.sleep(0.2)
            assert left == 0, f"{left} instance(s) still stored after all ran"
            await anyio.sleep(0.5)  # room for a doubled run to show up
            ctx.shutdown()
    return done_at_kill, killed


def check_outcome(
    ran: Counter[str], ticks: list[datetime], done_at_kill: int, killed: int, caplog: pytest.LogCaptureFixture
) -> None:
    assert 0 < done_at_kill < INSTANCES, "the kill did not happen mid-run"
    assert killed >= 1, "no connection of the app was killed"
    assert set(ran) == {f"i{n}" for n in range(INSTANCES)}
    doubled = {name: n for name, n in ran.items() if n != 1}
    assert not doubled, f"{len(doubled)} instance(s) ran more than once: {list(doubled.items())[:10]}"
    assert ticks, "the static task never ran"
    assert len(ticks) == len(set(ticks)), f"static task ran twice for one schedule: {sorted(ticks)}"
    pyncette_records = [r for r in caplog.records if r.name == "pyncette"]
    errors = [r.getMessage() for r in pyncette_records if r.levelno >= logging.ERROR]
    assert not errors, errors
    failed = [r for r in pyncette_records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
    # A kill between two calls breaks only idle connections, which the driver replaces silently:
    # then there is nothing to log, and the app having finished everything above is the evidence.
    if failed:
        assert all("retrying" in r.getMessage() for r in failed), [r.getMessage() for r in failed]


async def test_app_recovers_after_kill(
    options: dict[str, Any], raw_connection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyncette")
    ran: Counter[str] = Counter()
    ticks: list[datetime] = []
    app = Pyncette(repository_factory=mysql_repository, poll_interval=timedelta(seconds=0.2), **options)

    @app.dynamic_task(lease_duration=LEASE)
    async def job(context: Context) -> None:
        ran[context.task.name] += 1

    @app.task(interval=timedelta(seconds=0.5), lease_duration=LEASE)
    async def ticker(context: Context) -> None:
        ticks.append(context.scheduled_at)

    async def kill(ctx: PyncetteContext) -> int:
        """KILL every process of the app's user and database but the admin connection.

        The tests share the server (and the root user) with other apps, so the candidates are also
        narrowed to the connections the app's pool holds.
        """
        repository = ctx.repository
        assert isinstance(repository, MySQLRepository)
        pool = repository._pool
        own = {conn.thread_id() for conn in [*pool._free, *pool._used] if not conn.closed}
        rows = await query(
            raw_connection,
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND DB = %s AND ID <> CONNECTION_ID()",
            options["mysql_user"],
            options["mysql_database"],
        )
        killed = 0
        for (thread_id,) in rows:
            if thread_id in own:
                await query(raw_connection, f"KILL {int(thread_id)}")
                killed += 1
        return killed

    done_at_kill, killed = await run_app_and_kill(app, job, ran, kill)
    check_outcome(ran, ticks, done_at_kill, killed, caplog)


# --- the seed's snippet -----------------------------------------------------------------------

# The seed's snippet with the module name corrected (pyncette.mysql, not pyncette.postgres); the
# server, credentials and table are the test server's, everything else is as in the seed.
SEED_SCRIPT = """\
from pyncette import Pyncette, Context
from pyncette.mysql import mysql_repository

app = Pyncette(
    repository_factory=mysql_repository,
    mysql_host={host!r},{port_line}
    mysql_database={database!r},
    mysql_user={user!r},
    mysql_password={password!r},
    mysql_table_name={table!r}
)

@app.task(schedule='* * * * * */10')
async def foo(context: Context):
    print('This will run every 10 seconds')

if __name__ == '__main__':
    app.main()
"""


def run_seed_script(path: Path, seconds: float = 12.0) -> subprocess.CompletedProcess[str]:
    """Run ``path`` as a process, stop it with SIGINT after ``seconds`` (long enough for one 10 s slot)."""
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


async def test_seed_snippet_runs(mysql_options: dict[str, Any], tmp_path: Path) -> None:
    table = "pyncette_tasks_" + uuid.uuid4().hex[:8]
    port = mysql_options["mysql_port"]
    script = tmp_path / "seed_app.py"
    script.write_text(
        SEED_SCRIPT.format(
            host=mysql_options["mysql_host"],
            port_line="" if port == 3306 else f"\n    mysql_port={port!r},",
            database=mysql_options["mysql_database"],
            user=mysql_options["mysql_user"],
            password=mysql_options["mysql_password"],
            table=table,
        )
    )
    try:
        done = await anyio.to_thread.run_sync(run_seed_script, script)
    finally:
        await backend.purge({**mysql_options, "mysql_table_name": table})
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout
