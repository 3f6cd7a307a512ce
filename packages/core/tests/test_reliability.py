"""The runtime under faults: backend bugs, lost answers, records that cannot be decoded, bounded shutdown.

Each test here failed on the runtime before the reliability work (issue: "Reliability: fix every defect
that fault injection found").
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

import pyncette
from pyncette import Context, ExecutionMode, FailureMode, Pyncette
from pyncette.abc import Completion, Lease, Record
from pyncette.errors import BackendError, ConfigurationError, leaf_exception
from pyncette.healthcheck import use_healthcheck_server
from pyncette.memory import MemoryRepository
from pyncette.runtime import ShutdownTimeout
from pyncette.testing import VirtualClock, running, shared_repository

pytestmark = pytest.mark.anyio

START = datetime(2030, 1, 1, tzinfo=timezone.utc)


class BuggyClaims(MemoryRepository):
    """A backend with a bug: claiming one parent raises TypeError, every time."""

    def __init__(self, broken_parent: str) -> None:
        super().__init__()
        self.broken_parent = broken_parent
        self.broken_claims = 0

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        if parent == self.broken_parent:
            self.broken_claims += 1
            raise TypeError("bug in the backend")
        return await super().claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)


async def test_a_backend_bug_is_logged_not_retried_as_an_outage_and_other_work_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repository = BuggyClaims("broken")
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=1))
    clock = VirtualClock(START)
    ran: Counter[str] = Counter()

    @app.dynamic_task()
    async def broken(context: Context) -> None:
        ran["broken"] += 1

    @app.dynamic_task()
    async def healthy(context: Context) -> None:
        ran[context.task.name] += 1

    @app.task(interval=timedelta(seconds=1))
    async def every_second(context: Context) -> None:
        ran["every_second"] += 1

    with caplog.at_level(logging.WARNING, logger="pyncette"):
        async with app.create(clock=clock) as ctx, running(ctx):
            await ctx.schedule_tasks(healthy, {f"h{i}": {"interval": timedelta(seconds=5)} for i in range(19)})
            await clock.advance(timedelta(seconds=25))
    assert ran["every_second"] == 25
    assert all(ran[f"h{i}"] == 5 for i in range(19)), ran
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all("broken" in r.getMessage() and r.exc_info for r in errors)
    assert not [r for r in caplog.records if "Storage call 'poll' failed" in r.getMessage()]
    # Kept away for a growing while, not hammered: 1, 2, 4, 8 s ... within 25 s.
    assert 3 <= repository.broken_claims <= 6


class BuggyCommits(MemoryRepository):
    """A backend with a bug: a commit batch containing the record ``bad`` raises ValueError."""

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        if any(c.name == "bad" for c in completions):
            raise ValueError("bug in the backend")
        return await super().commit(completions)


async def test_a_commit_bug_fails_only_the_record_at_fault(caplog: pytest.LogCaptureFixture) -> None:
    repository = BuggyCommits()
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=1))
    clock = VirtualClock(START)
    ran: Counter[str] = Counter()

    @app.dynamic_task(lease_duration=timedelta(seconds=30))
    async def job(context: Context) -> None:
        ran[context.task.name] += 1

    with caplog.at_level(logging.ERROR, logger="pyncette"):
        async with app.create(clock=clock) as ctx, running(ctx):
            await ctx.schedule_tasks(job, {n: {"execute_at": START} for n in ("a", "bad", "b", "c")})
            await clock.advance(timedelta(seconds=1))
            left = sorted(state.task.name for state in (await ctx.list_tasks(job)).tasks)
    assert ran == {"a": 1, "bad": 1, "b": 1, "c": 1}
    assert left == ["bad"]  # the others committed (once-off: deleted); "bad" is retried when its lease expires
    assert any("bad" in r.getMessage() and r.exc_info for r in caplog.records)


class LostCommitAnswer(MemoryRepository):
    """The first commit is applied, but its answer never arrives (the connection dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        results = await super().commit(completions)
        if not self.lost:
            self.lost += 1
            raise BackendError("connection lost before the answer")
        return results


async def test_at_most_once_runs_even_when_the_answer_of_its_commit_was_lost(caplog: pytest.LogCaptureFixture) -> None:
    repository = LostCommitAnswer()
    app = Pyncette(repository_factory=shared_repository(repository))
    clock = VirtualClock(START)
    ran: list[datetime] = []

    @app.task(interval=timedelta(seconds=10), execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def job(context: Context) -> None:
        ran.append(context.scheduled_at)

    with caplog.at_level(logging.WARNING, logger="pyncette"):
        async with app.create(clock=clock) as ctx, running(ctx):
            await clock.advance(timedelta(seconds=30))
    assert repository.lost == 1
    assert [(t - START).total_seconds() for t in ran] == [10, 20, 30]
    assert not [r for r in caplog.records if "lease was lost" in r.getMessage()]


class LostAnswerWhileOthersMoveOn(MemoryRepository):
    """The first commit is applied and its answer lost; meanwhile another instance claims and commits the next
    run (a task behind schedule), so the record no longer shows our commit when it is read back."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = False

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        results = await super().commit(completions)
        if not self.fired:
            self.fired = True
            c = completions[0]
            assert c.next_at is not None
            lease = c.next_at + timedelta(seconds=10)
            await super().claim(c.parent, now=c.next_at, limit=1, lease_until=lease, token="other")
            await super().commit([Completion(c.parent, c.name, "other", c.next_at + timedelta(seconds=1))])
            raise BackendError("the answer was lost after the commit was applied")
        return results


async def test_at_most_once_runs_when_its_lost_commit_answer_is_followed_by_other_instances() -> None:
    app = Pyncette(repository_factory=shared_repository(LostAnswerWhileOthersMoveOn()))
    clock = VirtualClock(START)
    ran: list[float] = []

    @app.task(schedule="* * * * * *", execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def tick(context: Context) -> None:
        ran.append((context.scheduled_at - START).total_seconds())

    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(timedelta(seconds=4))
    # 1 s was committed (its answer lost); the "other instance" ran 2 s; this process runs 1, 3 and 4.
    assert ran == [1, 3, 4]


class DownFor(MemoryRepository):
    """Storage refuses one kind of call, ``"commit"`` or ``"unlock"`` (``BackendError``), until ``until`` on the
    app's clock; every other call works."""

    def __init__(self, clock: VirtualClock, until: datetime, refuses: str) -> None:
        super().__init__()
        self.clock = clock
        self.until = until
        self.refuses_call = refuses
        self.refused = 0

    def _gate(self, call: str) -> None:
        if call == self.refuses_call and self.clock.now() < self.until:
            self.refused += 1
            raise BackendError(f"{call} unavailable")

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        self._gate("commit")
        return await super().commit(completions)

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        self._gate("unlock")
        return await super().unlock(leases)


async def test_a_static_run_whose_commit_is_held_up_past_its_lease_is_not_run_again_here() -> None:
    clock = VirtualClock(START)
    repository = DownFor(clock, START + timedelta(seconds=40), "commit")
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=1))
    ran: list[float] = []

    @app.task(interval=timedelta(seconds=5), lease_duration=timedelta(seconds=10))
    async def tick(context: Context) -> None:
        ran.append((context.scheduled_at - START).total_seconds())

    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(timedelta(seconds=60))
    assert repository.refused > 3
    # The run due at 5 s is over, its commit retried until 40 s: long past its lease (15 s), this process still
    # knows its outcome, so it waits for the commit instead of claiming the 5 s run again (no run twice). Then
    # the runs go on: 10 s, 15 s, ... each once.
    assert ran == sorted(set(ran))
    assert ran[:2] == [5, 10] and ran[-1] == 60


async def test_commit_retries_speed_up_before_the_lease_ends_so_a_short_outage_makes_no_second_run() -> None:
    clock = VirtualClock(START)
    repository = DownFor(clock, START + timedelta(seconds=8.5), "commit")
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=1))
    ran: list[datetime] = []

    @app.dynamic_task(lease_duration=timedelta(seconds=10))
    async def job(context: Context) -> None:
        ran.append(clock.now())

    async with app.create(clock=clock) as ctx, running(ctx):
        await ctx.schedule_task(job, "once", execute_at=START)
        await clock.advance(timedelta(seconds=30))
        left = (await ctx.list_tasks(job)).tasks
    # Doubling backoff alone would retry at 0.2, 0.6, 1.4, 3.0, 6.2 and then 12.6 s: past the lease, when the
    # instance had been claimed and run again. Retries at most half the time left to the lease land at 9.05 s.
    assert repository.refused >= 6
    assert ran == [START]
    assert left == []


async def test_unlocks_that_storage_keeps_refusing_do_not_hold_up_commits() -> None:
    clock = VirtualClock(START)
    repository = DownFor(clock, START + timedelta(seconds=40), "unlock")
    app = Pyncette(repository_factory=shared_repository(repository), poll_interval=timedelta(seconds=1))
    late: list[float] = []
    tries: Counter[str] = Counter()

    @app.task(interval=timedelta(seconds=5), lease_duration=timedelta(seconds=10))
    async def tick(context: Context) -> None:
        late.append((clock.now() - context.scheduled_at).total_seconds())

    @app.dynamic_task(failure_mode=FailureMode.UNLOCK)
    async def flaky(context: Context) -> None:
        tries[context.task.name] += 1
        if tries[context.task.name] == 1:
            raise RuntimeError("first try fails (expected)")

    async with app.create(clock=clock) as ctx, running(ctx):
        await ctx.schedule_task(flaky, "f", execute_at=START)
        await clock.advance(timedelta(seconds=60))
    assert repository.refused > 3
    assert tries["f"] == 2  # its unlock landed once storage took unlocks again, and it ran again
    # Every run of the static task started on time: its commits did not wait behind the unlock's retries.
    assert len(late) == 12 and max(late) < 1


async def test_records_that_cannot_be_decoded_leak_no_slot_and_shutdown_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """More corrupt records than slots: each is logged once and parked; healthy work keeps running."""
    app = Pyncette(sqlite_database=str(tmp_path / "x.db"), concurrency_limit=2, poll_interval=timedelta(seconds=1))
    clock = VirtualClock(START)
    ran: Counter[str] = Counter()

    @app.dynamic_task()
    async def job(context: Context) -> None:
        ran[context.task.name] += 1

    bad = [f"bad-{i}" for i in range(6)]
    with caplog.at_level(logging.ERROR, logger="pyncette"):
        async with app.create(clock=clock) as ctx:
            await ctx.schedule_tasks(job, {n: {"interval": timedelta(seconds=5)} for n in [*bad, "good"]})
            for name in bad:
                await ctx.repository.corrupt(*job.instance_key(name))
            async with running(ctx):
                await clock.advance(timedelta(seconds=20))
    assert ran == {"good": 4}
    for name in bad:
        assert len([r for r in caplog.records if f"job/{name}" in r.getMessage()]) == 1, name


async def test_shutdown_is_bounded_by_the_drain_timeout(caplog: pytest.LogCaptureFixture) -> None:
    app = Pyncette(drain_timeout=timedelta(seconds=10))
    clock = VirtualClock(START)

    @app.task(interval=timedelta(seconds=1))
    async def stuck(context: Context) -> None:
        await pyncette.sleep(3600)

    with caplog.at_level(logging.ERROR, logger="pyncette"):
        async with app.create(clock=clock) as ctx:

            async def run_then_shut_down() -> None:
                async with anyio.create_task_group() as tg:
                    await tg.start(ctx.run)
                    await clock.advance(timedelta(seconds=2))
                    ctx.shutdown()
                    await clock.advance(timedelta(seconds=11))

            with pytest.raises(BaseException) as raised:  # noqa: PT011 - the task group wraps it; checked below
                await run_then_shut_down()
    error = leaf_exception(raised.value)
    assert isinstance(error, ShutdownTimeout) and "drain_timeout" in str(error)
    assert clock.now() < START + timedelta(seconds=60)
    assert any("left without a stored outcome: stuck" in r.getMessage() for r in caplog.records)


def test_a_huge_interval_is_refused_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match=r"invalid interval .*after 9999-12-31"):
        Pyncette().task(interval=timedelta(days=3_000_000))(_noop)


@pytest.mark.parametrize("value", [True, float("nan"), -1, "soon", timedelta(0)])
def test_bad_sqlite_timeout_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="invalid sqlite_timeout"):
        Pyncette(sqlite_timeout=value).resolve_backend()


async def test_two_servers_on_one_port_name_the_port_and_the_remedy() -> None:
    first, second = Pyncette(), Pyncette()
    use_healthcheck_server(first, port=0, bind_address="127.0.0.1")
    async with first.create() as ctx:
        use_healthcheck_server(second, port=ctx.healthcheck_port, bind_address="127.0.0.1")
        with pytest.raises(ConfigurationError, match=rf"127.0.0.1:{ctx.healthcheck_port}.*its own port"):
            async with second.create():
                pass


def _run_app(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.realtime
def test_main_reports_unreachable_storage_in_one_line(tmp_path: Path) -> None:
    process = _run_app(
        tmp_path,
        """
        from pyncette import Pyncette
        app = Pyncette(sqlite_database="/nonexistent-dir/tasks.db")
        app.main()
        """,
    )
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyncette: error: "), err
    assert "/nonexistent-dir/tasks.db" in lines[0]


@pytest.mark.realtime
def test_a_second_signal_exits_non_zero(tmp_path: Path) -> None:
    process = _run_app(
        tmp_path,
        """
        import anyio, sys
        from datetime import timedelta
        from pyncette import Pyncette

        app = Pyncette(poll_interval=timedelta(milliseconds=50))

        @app.task(interval=timedelta(milliseconds=100))
        async def slow(context):
            print("started", flush=True)
            await anyio.sleep(3600)

        app.main()
        """,
    )
    try:
        assert process.stdout is not None
        _read_until(process, "started")
        process.send_signal(signal.SIGINT)
        _read_until(process, "shutting down gracefully")  # signals sent at once would merge into one
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    assert "second signal" in err


def _read_until(process: subprocess.Popen[str], text: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"the app exited before printing {text!r}")


async def _noop(context: Context) -> None:
    return None
