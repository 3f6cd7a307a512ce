"""End to end on the moto server: a whole app survives cut connections, and the seed snippet runs."""

from __future__ import annotations

import asyncio
import contextlib
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
from urllib.parse import urlsplit

import anyio
import pytest

from pyncette import Context, Pyncette
from pyncette.runtime import PyncetteContext
from pyncette.task import Task
from pyncette_dynamodb import backend, dynamodb_repository

pytestmark = pytest.mark.anyio

INSTANCES = 300  # moto answers slowly; enough to be cut mid-run
LEASE = timedelta(seconds=5)


class CuttingProxy:
    """A TCP proxy in front of the server; :meth:`cut` aborts every connection through it at once."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.cut()
            await self.server.wait_closed()

    def cut(self) -> int:
        """Abort every open connection (client and server side); returns how many client connections."""
        clients = len(self.writers) // 2
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        return clients

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(Exception):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.discard(writer)
        self.writers.discard(up_writer)


@pytest.fixture
async def proxy(dynamodb_endpoint: str) -> AsyncIterator[CuttingProxy]:
    parts = urlsplit(dynamodb_endpoint)
    server = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 80)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def options(dynamodb_endpoint: str) -> AsyncIterator[dict[str, Any]]:
    """A fresh table and prefix (purged afterwards through the real endpoint)."""
    opts: dict[str, Any] = {
        "dynamodb_endpoint": dynamodb_endpoint,
        "dynamodb_table_name": "app" + uuid.uuid4().hex[:12],
        "dynamodb_partition_prefix": "app" + uuid.uuid4().hex[:12],
    }
    try:
        yield opts
    finally:
        await backend.purge(opts)


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
    app: Pyncette, template: Task, ran: Counter[str], kill: Callable[[], Awaitable[int]]
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
            killed = await kill()
            await anyio.sleep(0.05)
            killed += await kill()
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


async def test_app_recovers_after_connections_are_cut(
    options: dict[str, Any], proxy: CuttingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyncette")
    ran: Counter[str] = Counter()
    ticks: list[datetime] = []
    # One botocore attempt: a cut request fails up to the backend and the runtime instead of botocore.
    proxied = {**options, "dynamodb_endpoint": f"http://127.0.0.1:{proxy.port}", "dynamodb_max_attempts": 1}
    app = Pyncette(repository_factory=dynamodb_repository, poll_interval=timedelta(seconds=0.2), **proxied)

    @app.dynamic_task(lease_duration=LEASE)
    async def job(context: Context) -> None:
        ran[context.task.name] += 1

    @app.task(interval=timedelta(seconds=0.5), lease_duration=LEASE)
    async def ticker(context: Context) -> None:
        ticks.append(context.scheduled_at)

    async def kill() -> int:
        return proxy.cut()

    done_at_kill, killed = await run_app_and_kill(app, job, ran, kill)
    check_outcome(ran, ticks, done_at_kill, killed, caplog)


# --- the seed's snippet -----------------------------------------------------------------------

# The seed's snippet as it is (region and table too), plus the endpoint of the test server.
SEED_SCRIPT = """\
from pyncette import Pyncette, Context
from pyncette.dynamodb import dynamodb_repository

app = Pyncette(
    repository_factory=dynamodb_repository,
    dynamodb_region_name="eu-west-1",
    dynamodb_table_name="pyncette",
    dynamodb_endpoint={endpoint!r},
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


async def test_seed_snippet_runs(dynamodb_endpoint: str, tmp_path: Path) -> None:
    script = tmp_path / "seed_app.py"
    script.write_text(SEED_SCRIPT.format(endpoint=dynamodb_endpoint))
    try:
        done = await anyio.to_thread.run_sync(run_seed_script, script)
    finally:
        await backend.purge(
            {
                "dynamodb_region_name": "eu-west-1",
                "dynamodb_table_name": "pyncette",
                "dynamodb_endpoint": dynamodb_endpoint,
            }
        )
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout
