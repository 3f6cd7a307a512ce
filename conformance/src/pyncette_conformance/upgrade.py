"""Checks of ``pyncette migrate --from-1x`` on real 1.x data, for any backend that implements ``legacy()``.

Pyncette 1.1.0 itself (in its own environment, see :mod:`pyncette_conformance.legacy`) runs
:data:`LEGACY_SCRIPT`: an app with a static task, a dynamic template (instances with an interval, a cron
schedule with a time zone, ``execute_at`` in the future and in the past, extra arguments, names with ``:``
and non-ASCII letters) and a partitioned template registers its instances and exits, printing what 1.x
stored (or, for the lease checks, runs until its first due run and is killed in the middle of it, leaving
that record leased). The same app, declared for 2.x by :func:`make_app` (and importable as
``pyncette_conformance.upgrade:app`` for the command line), is then migrated and checked.

A backend's test module subclasses :class:`UpgradeSuite` and provides the ``upgrade_target`` fixture::

    class TestMigration(UpgradeSuite):
        @pytest.fixture
        def upgrade_target(self, tmp_path):
            return UpgradeTarget("sqlite", {"sqlite_database": str(tmp_path / "a.db")}, {...1.x options...})

A target that gives ``snapshot`` (everything its store holds) has each step that must change nothing compared
against a full snapshot; the others only against :func:`legacy_state`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.to_thread
import pytest

from pyncette import Context, Pyncette, backends, migration
from pyncette.abc import Backend, LegacyRow, LegacyStore
from pyncette.migration import MigrationReport, migrate
from pyncette.testing import VirtualClock, running

from .legacy import run_legacy

#: 1.x's factory for each backend name (``module:attribute`` in 1.1.0).
LEGACY_FACTORIES = {
    "sqlite": "pyncette.sqlite:sqlite_repository",
    "redis": "pyncette.redis:redis_repository",
    "postgres": "pyncette.postgres:postgres_repository",
    "mysql": "pyncette.mysql:mysql_repository",
    "dynamodb": "pyncette.dynamodb:dynamodb_repository",
}

#: Every schedule runs at most once within a day of registration, so "each due run exactly once" is
#: checked by advancing a virtual clock to the latest next run.
LEGACY_SCRIPT = r"""
import asyncio, importlib, json, os, sys
from datetime import datetime, timedelta, timezone

from pyncette import Pyncette

config = json.loads(sys.argv[1])
module, _, attribute = config["factory"].partition(":")
factory = getattr(importlib.import_module(module), attribute)
app = Pyncette(repository_factory=factory, **config["options"])


async def body(context):
    if not config.get("lease"):
        raise AssertionError("1.x must not run anything here")
    # The first due run holds its lease: report what is stored and die without releasing it.
    await report_states()
    sys.stdout.flush()
    os._exit(0)


heartbeat = app.task(name="heartbeat", interval=timedelta(days=1))(body)
report = app.dynamic_task(name="report", lease_duration=timedelta(hours=1))(body)
shard_job = app.partitioned_task(name="shard_job", partition_count=4)(body)


async def report_states():
    out = []
    state = await ctx.get_task(heartbeat)
    out.append({"template": None, "name": "heartbeat", "scheduled_at": state.scheduled_at.isoformat(),
                "spec": None, "locked": state.locked_until is not None})
    for template, name, _ in instances:
        state = await ctx.get_task(template, name)
        out.append({"template": template.name, "name": name, "scheduled_at": state.scheduled_at.isoformat(),
                    "spec": state.task.as_spec(), "locked": state.locked_until is not None})
    print(json.dumps(out))


async def main():
    global ctx, instances
    async with app.create() as ctx:
        now = datetime.now(timezone.utc)
        instances = [
            (report, "daily", dict(interval=timedelta(days=1), user="alice", n=1)),
            (report, "morning", dict(schedule="0 9 * * *", timezone="America/New_York", lang="en")),
            (report, "once", dict(execute_at=now + timedelta(hours=3), payload={"k": [1, 2], "z": None})),
            (report, "overdue", dict(execute_at=now - timedelta(hours=1))),
            (report, "team:blue", dict(interval=timedelta(hours=20))),
            (report, "caf\u00e9", dict(schedule="30 6 * * *", timezone="Europe/Dublin")),
        ]
        instances += [(shard_job, f"user-{i}", dict(interval=timedelta(hours=20, minutes=i), i=i)) for i in range(8)]
        for template, name, options in instances:
            await ctx.schedule_task(template, name, **options)
        # A static task's record is created by its first poll (not due: nothing runs).
        await ctx._repository.poll_task(now, heartbeat)
        if config.get("lease"):
            # Run as a 1.x worker would; the due instance's body ends the process (see body).
            await asyncio.wait_for(ctx.run(), 60)
            raise AssertionError("1.x ran nothing")
        await report_states()


asyncio.run(main())
"""

Run = tuple[str, datetime]


@dataclass(frozen=True)
class LegacyTask:
    """One record 1.1.0 stored: its task, its 1.x spec (dynamic instances) and its next run."""

    template: str | None
    name: str
    scheduled_at: datetime
    spec: dict[str, Any] | None
    locked: bool

    @property
    def key(self) -> str:
        """The 2.x canonical name (``template:instance``, or the static task's name)."""
        return self.name if self.template is None else f"{self.template}:{self.name}"


@dataclass
class UpgradeTarget:
    """Where to migrate: the 2.x backend name and options, and the options 1.1.0 is given for the same store
    (the same ones, plus whatever 1.1.0 needs there, such as ``mysql_skip_table_create``), and what to do
    before 1.1.0 runs (create its table where it cannot, say)."""

    backend: str
    options: dict[str, Any]
    legacy_options: dict[str, Any] = field(default_factory=dict)
    prepare_legacy: Callable[[], Awaitable[None]] | None = None
    #: Everything the store holds (1.x, backup and 2.x data), comparable with ``==``; optional.
    snapshot: Callable[[], Awaitable[Any]] | None = None
    #: Removes what :func:`cleanup` does not (1.x data a backend's ``purge`` leaves); optional.
    remove_rest: Callable[[], Awaitable[None]] | None = None

    @property
    def descriptor(self) -> Backend:
        return backends.load(self.backend)


def make_app(**options: Any) -> tuple[Pyncette, list[Run]]:
    """The 2.x declaration of :data:`LEGACY_SCRIPT`'s app, and the list its runs are recorded in."""
    runs: list[Run] = []
    app = Pyncette(**options)

    async def body(context: Context) -> None:
        runs.append((context.task.canonical_name, context.scheduled_at))

    app.task(name="heartbeat", interval=timedelta(days=1))(body)
    app.dynamic_task(name="report", lease_duration=timedelta(hours=1))(body)
    app.partitioned_task(name="shard_job", partition_count=4)(body)
    return app, runs


#: For the command line: ``pyncette migrate pyncette_conformance.upgrade:app --from-1x --backend NAME -o ...``.
app, _ = make_app()


async def create_legacy_data(target: UpgradeTarget, *, lease: bool = False) -> list[LegacyTask]:
    """Have 1.1.0 register :data:`LEGACY_SCRIPT`'s tasks in the store; with ``lease``, 1.1.0 then runs the
    app and is killed while the due instance runs, leaving it leased."""
    if target.prepare_legacy is not None:
        await target.prepare_legacy()
    config = {
        "factory": LEGACY_FACTORIES[target.backend],
        "options": {**target.options, **target.legacy_options},
        "lease": lease,
    }
    proc = await anyio.to_thread.run_sync(lambda: run_legacy(LEGACY_SCRIPT, json.dumps(config), timeout=120))
    if proc.returncode != 0:
        raise AssertionError(f"the 1.1.0 script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return [
        LegacyTask(t["template"], t["name"], datetime.fromisoformat(t["scheduled_at"]), t["spec"], t["locked"])
        for t in json.loads(proc.stdout.strip().splitlines()[-1])
    ]


def expected_counts(tasks: list[LegacyTask]) -> dict[str, int]:
    """Records per 2.x task name, as the migration report counts them."""
    return dict(Counter(t.template or t.name for t in tasks))


async def migrate_in_process(target: UpgradeTarget, **flags: Any) -> MigrationReport:
    """:func:`pyncette.migration.migrate` with this module's app; ``flags`` are its keyword options."""
    descriptor = target.descriptor
    settings = descriptor.settings(target.options)
    legacy = descriptor.legacy(settings)
    assert legacy is not None, f"backend {target.backend!r} implements no legacy()"
    async with legacy as store:
        return await migrate(
            store,
            lambda: descriptor.open(settings),
            make_app()[0].tasks,
            now=flags.pop("now", None) or datetime.now(timezone.utc),
            **flags,
        )


def migrate_cli(target: UpgradeTarget, *flags: str) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``pyncette migrate ... --from-1x --json`` in a subprocess: (exit status, the JSON report, stderr)."""
    proc = _run_cli(target, *flags, "--json")
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return proc.returncode, report, proc.stderr


def _run_cli(target: UpgradeTarget, *flags: str) -> subprocess.CompletedProcess[str]:
    options = [f"{key}={value}" for key, value in target.options.items() if value not in ("", None)]
    command = [sys.executable, "-m", "pyncette", "migrate", f"{__name__}:app", "--from-1x", "--backend", target.backend]
    for option in options:
        command += ["-o", option]
    return subprocess.run([*command, *flags], capture_output=True, text=True, timeout=120, check=False)


async def legacy_state(target: UpgradeTarget) -> tuple[bool, bool]:
    """(1.x data in its original place, a backup exists)."""
    descriptor = target.descriptor
    legacy = descriptor.legacy(descriptor.settings(target.options))
    assert legacy is not None
    async with legacy as store:
        return await store.has_live_data(), await store.has_backup()


async def cleanup(target: UpgradeTarget) -> None:
    """Drop the backup (if any) and the table or namespace (2.x, or 1.x never set aside), then whatever
    ``target.remove_rest`` removes."""
    descriptor = target.descriptor
    settings = descriptor.settings(target.options)
    legacy = descriptor.legacy(settings)
    if legacy is not None:
        async with legacy as store:
            await _drop_backup(store)
    await descriptor.purge(settings)
    if target.remove_rest is not None:
        await target.remove_rest()


async def store_state(target: UpgradeTarget) -> Any:
    """What a step that must change nothing is checked against: the target's snapshot where it has one,
    always with :func:`legacy_state`."""
    return await legacy_state(target), None if target.snapshot is None else await target.snapshot()


async def _reads_live_rows(target: UpgradeTarget) -> bool:
    """Whether the store reads 1.x rows in place (optional), so that a first dry run counts them."""
    descriptor = target.descriptor
    legacy = descriptor.legacy(descriptor.settings(target.options))
    assert legacy is not None
    async with legacy as store:
        return store.live_rows(1) is not None


async def _drop_backup(store: LegacyStore) -> None:
    if await store.has_backup():
        await store.drop_backup()


async def check_migrated(target: UpgradeTarget, expected: list[LegacyTask]) -> None:
    """Every 1.x record is in the 2.x store, with the same arguments, schedule, time zone and next run."""
    app, _ = make_app(backend=target.backend, **target.options)
    templates = {t.name: t for t in app.tasks}
    async with app.create() as ctx:
        for legacy_task in expected:
            if legacy_task.template is None:
                state = await ctx.get_task(templates[legacy_task.name])
            else:
                state = await ctx.get_task(templates[legacy_task.template], legacy_task.name)
            assert state is not None, f"{legacy_task.key} was not migrated"
            assert state.scheduled_at == legacy_task.scheduled_at, legacy_task.key
            assert state.locked_until is None, legacy_task.key
            spec = legacy_task.spec
            if spec is None:
                continue
            task = state.task
            assert task.name == spec["name"]
            assert task.extra_args == spec["extra_args"], legacy_task.key
            assert task.cron == spec["schedule"], legacy_task.key
            assert task.timezone == spec["timezone"], legacy_task.key
            interval = None if spec["interval"] is None else timedelta(seconds=spec["interval"])
            assert task.interval == interval, legacy_task.key
            at = None if spec["execute_at"] is None else datetime.fromisoformat(spec["execute_at"])
            assert task.execute_at == at, legacy_task.key


async def check_runs_once(target: UpgradeTarget, expected: list[LegacyTask]) -> None:
    """Run the migrated app on a virtual clock until just after the latest next run: each record runs exactly
    once, at its migrated time (the overdue one at once)."""
    want = {t.key: t.scheduled_at for t in expected}
    clock = VirtualClock(datetime.now(timezone.utc))
    # Runs are recorded with their scheduled time, so a long poll interval loses nothing here, and it keeps
    # the number of polls (each a round trip per partition) to a few dozen for the virtual day.
    poll = timedelta(minutes=30)
    app, runs = make_app(backend=target.backend, poll_interval=poll, **target.options)
    async with app.create(clock=clock) as ctx, running(ctx):
        # A dynamic instance's run is noticed by the next poll after it is due.
        await clock.advance_to(max(want.values()) + 2 * poll)
    # A record whose schedule comes round again before the clock stops (a daily cron due within the hour when
    # the test starts) runs a second time, legitimately: judge each scheduled time on its own.
    twice = sorted(f"{name}@{at.isoformat()}" for (name, at), n in Counter(runs).items() if n > 1)
    assert twice == [], "ran more than once"
    ran = {name for name, at in runs if at == want.get(name)}
    assert ran == set(want), f"never ran at the migrated time: {sorted(set(want) - ran)}"
    early = sorted(name for name, at in runs if at < want[name])
    assert early == [], f"ran before the migrated time: {early}"


def _counts(report: dict[str, Any], key: str) -> dict[str, int]:
    return {name: task[key] for name, task in report["tasks"].items() if task[key]}


class _Interrupted(Exception):
    pass


class _InterruptedAfterOnePage(LegacyStore):
    """A store whose backup stream breaks after its first page (a crash in the middle of a migration)."""

    def __init__(self, store: LegacyStore) -> None:
        self._store = store
        #: How many rows the first page had (at most the batch; fewer where a backend pages per index).
        self.first_page = 0

    async def describe(self) -> str:
        return await self._store.describe()

    async def has_live_data(self) -> bool:
        return await self._store.has_live_data()

    async def has_backup(self) -> bool:
        return await self._store.has_backup()

    async def live_leases(self, now: datetime) -> int:
        return await self._store.live_leases(now)

    async def set_aside(self) -> None:
        await self._store.set_aside()

    async def rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        async for page in self._store.rows(batch):
            self.first_page = len(page)
            yield page
            raise _Interrupted

    async def drop_backup(self) -> None:
        await self._store.drop_backup()


@pytest.mark.anyio
class UpgradeSuite:
    """The migration checks; subclasses provide ``upgrade_target`` (a fresh store per test, cleaned up)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def upgrade_target(self) -> UpgradeTarget:
        """A fresh store: override it (the suite cleans up before and after each test)."""
        raise NotImplementedError("override the upgrade_target fixture")

    @pytest.fixture
    async def target(self, upgrade_target: UpgradeTarget) -> AsyncIterator[UpgradeTarget]:
        await cleanup(upgrade_target)
        try:
            yield upgrade_target
        finally:
            await cleanup(upgrade_target)

    @pytest.mark.timeout(300)
    async def test_cli_dry_run_migrate_again_and_drop_backup(self, target: UpgradeTarget) -> None:
        expected = await create_legacy_data(target)
        counts = expected_counts(expected)

        before = await store_state(target)
        assert before[0] == (True, False)
        status, report, stderr = migrate_cli(target, "--dry-run")
        assert status == 0, stderr
        assert report is not None
        assert report["found"] and report["dry_run"] and not report["set_aside"]
        assert report["live_leases"] == 0 and report["failed"] == 0
        if await _reads_live_rows(target):
            assert _counts(report, "migrated") == counts
        assert await store_state(target) == before, "a dry run changed the store"

        status, report, stderr = migrate_cli(target)
        assert status == 0, stderr
        assert report is not None
        assert report["set_aside"] and not report["backup_dropped"] and report["failed"] == 0
        assert _counts(report, "migrated") == counts
        assert _counts(report, "already_present") == {}
        assert await legacy_state(target) == (False, True)
        await check_migrated(target, expected)

        # Running again changes nothing: everything is already present.
        migrated = await store_state(target)
        status, report, stderr = migrate_cli(target)
        assert status == 0, stderr
        assert report is not None
        assert report["found"] and not report["set_aside"] and report["failed"] == 0
        assert _counts(report, "migrated") == {}
        assert _counts(report, "already_present") == counts
        assert await store_state(target) == migrated, "a second run changed the store"

        status, report, stderr = migrate_cli(target, "--drop-1x-backup")
        assert status == 0, stderr
        assert report is not None
        assert not report["set_aside"]
        assert _counts(report, "migrated") == {}
        assert _counts(report, "already_present") == counts
        assert report["backup_dropped"]
        assert await legacy_state(target) == (False, False)

        # The plain report (not --json) says so when nothing is left (the JSON one: test_nothing_to_migrate).
        done = _run_cli(target)
        assert done.returncode == 0, done.stderr
        assert "no Pyncette 1.x data found" in done.stdout
        await check_migrated(target, expected)

    @pytest.mark.timeout(300)
    async def test_migrated_app_runs_each_due_run_once(self, target: UpgradeTarget) -> None:
        expected = await create_legacy_data(target)
        report = await migrate_in_process(target)
        assert report.failed == 0
        assert {name: t.migrated for name, t in report.tasks.items()} == expected_counts(expected)
        await check_migrated(target, expected)
        await check_runs_once(target, expected)

    @pytest.mark.timeout(300)
    async def test_live_leases_refused_unless_forced(self, target: UpgradeTarget) -> None:
        expected = await create_legacy_data(target, lease=True)
        leased = [t.key for t in expected if t.locked]
        assert leased == ["report:overdue"], "1.1.0 leased something else than the one due instance"

        before = await store_state(target)
        assert before[0] == (True, False)
        status, report, stderr = migrate_cli(target)
        assert status == 1
        assert report is None
        assert "1 record(s)" in stderr and "live lease" in stderr and "--force" in stderr, stderr
        assert await store_state(target) == before, "a refused migration changed the store"

        status, report, stderr = migrate_cli(target, "--force")
        assert status == 0, stderr
        assert report is not None
        assert report["live_leases"] == 1
        assert _counts(report, "migrated") == expected_counts(expected)
        await check_migrated(target, expected)

    @pytest.mark.timeout(300)
    async def test_an_interrupted_run_is_completed_by_the_next(
        self, target: UpgradeTarget, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        expected = await create_legacy_data(target)
        monkeypatch.setattr(migration, "BATCH", 4)
        descriptor = target.descriptor
        settings = descriptor.settings(target.options)
        legacy = descriptor.legacy(settings)
        assert legacy is not None
        async with legacy as store:
            interrupted = _InterruptedAfterOnePage(store)
            with pytest.raises(_Interrupted):
                await migrate(
                    interrupted,
                    lambda: descriptor.open(settings),
                    make_app()[0].tasks,
                    now=datetime.now(timezone.utc),
                )
        assert await legacy_state(target) == (False, True)
        report = await migrate_in_process(target)
        assert not report.set_aside and report.failed == 0
        assert 0 < interrupted.first_page <= 4
        assert sum(t.already_present for t in report.tasks.values()) == interrupted.first_page
        assert sum(t.migrated for t in report.tasks.values()) == len(expected) - interrupted.first_page
        await check_migrated(target, expected)

    @pytest.mark.timeout(300)
    async def test_a_dry_run_after_set_aside_counts_without_writing(self, target: UpgradeTarget) -> None:
        expected = await create_legacy_data(target)
        await migrate_in_process(target)
        descriptor = target.descriptor
        await descriptor.purge(descriptor.settings(target.options))  # the 2.x records only: the backup stays
        before = await store_state(target)
        assert before[0] == (False, True)
        report = await migrate_in_process(target, dry_run=True)
        assert report.found and report.dry_run and not report.set_aside and report.failed == 0
        assert {name: t.migrated for name, t in report.tasks.items()} == expected_counts(expected)
        assert await store_state(target) == before, "a dry run changed the store"
        report = await migrate_in_process(target)
        assert not report.set_aside and report.failed == 0
        assert {name: t.migrated for name, t in report.tasks.items()} == expected_counts(expected)
        await check_migrated(target, expected)

    async def test_nothing_to_migrate(self, target: UpgradeTarget) -> None:
        before = await store_state(target)
        assert before[0] == (False, False)
        status, report, stderr = migrate_cli(target)
        assert status == 0, stderr
        assert report is not None
        assert not report["found"] and report["tasks"] == {} and not report["set_aside"]
        assert await store_state(target) == before, "a run on an empty store changed it"

    async def test_a_2x_store_is_not_1x_data(self, target: UpgradeTarget) -> None:
        app, _ = make_app(backend=target.backend, **target.options)
        async with app.create() as ctx:
            await ctx.schedule_task(app.tasks[1], "x", interval=timedelta(hours=1))
        assert await legacy_state(target) == (False, False)
        report = await migrate_in_process(target)
        assert not report.found
        assert report.tasks == {}


__all__ = [
    "LEGACY_SCRIPT",
    "LegacyTask",
    "UpgradeSuite",
    "UpgradeTarget",
    "app",
    "check_migrated",
    "check_runs_once",
    "cleanup",
    "create_legacy_data",
    "expected_counts",
    "legacy_state",
    "make_app",
    "migrate_cli",
    "migrate_in_process",
    "store_state",
]
