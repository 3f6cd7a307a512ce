"""Whole apps against DynamoDB: the seed documentation snippet run verbatim as a process, and apps that
keep going while their (private) moto server hangs or is killed and restarted.

The conformance RecoverySuite (test_conformance.py) covers connections cut by the repository's own hook.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from pyncette import Context, Pyncette, PyncetteContext, Task
from pyncette.errors import BackendError
from pyncette_conformance import run_script_until_interrupted
from pyncette_conformance.recovery import count_instances, wait_for
from pyncette_conformance.servers import MotoServer
from pyncette_dynamodb import backend

pytestmark = pytest.mark.anyio


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


async def test_seed_snippet_runs(dynamodb_endpoint: str, tmp_path: Path) -> None:
    script = tmp_path / "seed_app.py"
    script.write_text(SEED_SCRIPT.format(endpoint=dynamodb_endpoint))
    try:
        done = await anyio.to_thread.run_sync(run_script_until_interrupted, script)
    finally:
        await backend.purge(
            backend.settings(
                {
                    "dynamodb_region_name": "eu-west-1",
                    "dynamodb_table_name": "pyncette",
                    "dynamodb_endpoint": dynamodb_endpoint,
                }
            )
        )
    assert "This will run every 10 seconds" in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout


# --- a private server that hangs, dies and comes back ---------------------------------------------

# Longer than the hang below (about 5 s): a run whose lease ran out while the server hung may run again
# (at-least-once, docs/reliability.md), which is not what these tests are about.
LEASE = timedelta(seconds=10)
READ_TIMEOUT = 1.0
ATTEMPTS = 2


def _options(url: str) -> dict[str, Any]:
    return {
        "dynamodb_endpoint": url,
        "dynamodb_partition_prefix": "t" + uuid.uuid4().hex[:12],
        "dynamodb_connect_timeout": READ_TIMEOUT,
        "dynamodb_read_timeout": READ_TIMEOUT,
        "dynamodb_max_attempts": ATTEMPTS,
    }


class _Tracker:
    """An app with a dynamic once-off job and a static ticker, counting what ran."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.ran: Counter[str] = Counter()
        self.ticks: list[datetime] = []
        self.app = app = Pyncette(repository_factory=backend, poll_interval=timedelta(seconds=0.2), **options)

        @app.dynamic_task(lease_duration=LEASE)
        async def job(context: Context) -> None:
            self.ran[context.task.name] += 1

        @app.task(interval=timedelta(seconds=0.5), lease_duration=LEASE)
        async def ticker(context: Context) -> None:
            self.ticks.append(context.scheduled_at)

        self.job: Task = job

    async def schedule(self, ctx: PyncetteContext, names: list[str]) -> None:
        due = datetime.now(timezone.utc) - timedelta(seconds=1)
        await ctx.schedule_tasks(self.job, {name: {"execute_at": due} for name in names})

    async def settle(self, ctx: PyncetteContext, names: list[str]) -> None:
        """Wait until every name ran and no instance is left stored (a leased, uncommitted one could run again)."""
        await wait_for(lambda: set(names) <= set(self.ran), 60, "every instance to run")
        deadline = time.monotonic() + (LEASE * 3).total_seconds()
        while (left := await count_instances(ctx, self.job)) and time.monotonic() < deadline:
            await anyio.sleep(0.2)
        assert left == 0, f"{left} instance(s) still stored after all ran"
        await anyio.sleep(0.5)  # room for a doubled run to show up

    def check(self) -> None:
        doubled = {name: n for name, n in self.ran.items() if n != 1}
        assert not doubled, f"{len(doubled)} instance(s) ran more than once: {list(doubled.items())[:10]}"
        assert len(self.ticks) == len(set(self.ticks)), f"static task ran twice for one schedule: {self.ticks}"


async def _fails_promptly(ctx: PyncetteContext, limit: float) -> None:
    """A storage call fails with BackendError within ``limit`` seconds (it must never hang)."""
    started = time.monotonic()
    with pytest.raises(BackendError):
        with anyio.fail_after(limit + 10):
            await ctx.repository.get("probe", "probe")
    assert time.monotonic() - started < limit


@pytest.mark.realtime
async def test_app_survives_a_hung_server(private_moto: MotoServer, caplog: pytest.LogCaptureFixture) -> None:
    """SIGSTOP: requests time out (some are applied once the server resumes, their replies long gone);
    SIGCONT: the app catches up, and every run happens exactly once."""
    caplog.set_level(logging.WARNING, logger="pyncette")
    tracker = _Tracker(_options(private_moto.url))
    names = [f"i{n}" for n in range(150)]
    async with tracker.app.create() as ctx:
        await tracker.schedule(ctx, names)
        async with anyio.create_task_group() as tg:
            await tg.start(ctx.run)
            await wait_for(lambda: sum(tracker.ran.values()) >= 10, 20, "the first runs")
            private_moto.signal(signal.SIGSTOP)
            try:
                # Every attempt waits out the read timeout; botocore backs off up to a second in between.
                await _fails_promptly(ctx, ATTEMPTS * READ_TIMEOUT + 2)
                await anyio.sleep(1)
            finally:
                private_moto.signal(signal.SIGCONT)
            ticks_at_resume = len(tracker.ticks)
            await tracker.settle(ctx, names)
            await wait_for(lambda: len(tracker.ticks) >= ticks_at_resume + 2, 20, "the static task to tick again")
            ctx.shutdown()
    assert sum(tracker.ran.values()) >= len(names)
    tracker.check()
    errors = [r.getMessage() for r in caplog.records if r.name == "pyncette" and r.levelno >= logging.ERROR]
    assert not errors, errors


@pytest.mark.realtime
async def test_app_recovers_after_the_server_is_killed_and_restarted(
    private_moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL: calls fail at once with BackendError; the server comes back on the same port, empty
    (moto keeps nothing), the table is created again, and the same app carries on."""
    caplog.set_level(logging.WARNING, logger="pyncette")
    options = _options(private_moto.url)
    tracker = _Tracker(options)
    before, after = [f"b{n}" for n in range(30)], [f"a{n}" for n in range(30)]
    async with tracker.app.create() as ctx:
        await tracker.schedule(ctx, before)
        async with anyio.create_task_group() as tg:
            await tg.start(ctx.run)
            await tracker.settle(ctx, before)
            private_moto.kill()
            await _fails_promptly(ctx, 5)  # connection refused: no read timeout to wait for
            await anyio.to_thread.run_sync(private_moto.start)
            async with backend.open(backend.settings(options)):
                pass  # creates the table again
            ticks_at_restart = len(tracker.ticks)
            await tracker.schedule(ctx, after)
            await tracker.settle(ctx, after)
            # The static task's record was lost with the server: the runtime recreates it.
            await wait_for(lambda: len(tracker.ticks) >= ticks_at_restart + 2, 20, "the static task to tick again")
            ctx.shutdown()
    assert set(tracker.ran) == set(before) | set(after)
    tracker.check()
    assert any("was missing; recreating it" in r.getMessage() for r in caplog.records)
