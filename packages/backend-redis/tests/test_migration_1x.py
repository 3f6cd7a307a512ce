"""``pyncette migrate --from-1x`` on Redis, with 1.x data written by pyncette 1.1.0 itself."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
import redis.asyncio

import pyncette_redis._legacy as legacy_module
from pyncette import Pyncette
from pyncette.abc import Backend
from pyncette.errors import ConfigurationError
from pyncette.migration import MigrationReport, migrate
from pyncette.testing import VirtualClock, running
from pyncette_conformance.legacy import run_legacy
from pyncette_redis import backend

# -------------------------------------------------------------------------------------------------
# Backend-neutral helpers (the same in the DynamoDB test; they can move to pyncette_conformance).
# -------------------------------------------------------------------------------------------------

#: A 1.x app: ``script.py FACTORY_MODULE FACTORY_NAME OPTIONS_JSON MODE``. Mode ``data`` registers the
#: instances below, runs the app for a moment (so that the static task gets its record) and prints every
#: stored state as JSON; mode ``lease`` leaves one instance leased for an hour (the process dies mid-run).
LEGACY_SCRIPT = r"""
import asyncio, datetime, importlib, json, os, sys
from pyncette import Pyncette

module, factory, options, mode = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
app = Pyncette(
    repository_factory=getattr(importlib.import_module(module), factory),
    poll_interval=datetime.timedelta(milliseconds=200),
    **options,
)

@app.task(interval=datetime.timedelta(days=1))
async def heartbeat(context):
    pass

@app.dynamic_task(lease_duration=datetime.timedelta(hours=1))
async def report(context):
    if mode == "lease":
        os._exit(0)

@app.partitioned_task(partition_count=4)
async def shard(context):
    pass

def state(template, name, found):
    task = found.task
    return {
        "template": template, "name": name, "args": task.extra_args, "schedule": task.schedule,
        "timezone": task.timezone, "interval": task.interval.total_seconds() if task.interval else None,
        "execute_at": task.execute_at.isoformat() if task.execute_at else None,
        "scheduled_at": found.scheduled_at.isoformat(),
    }

async def main():
    now = datetime.datetime.now(datetime.timezone.utc)
    async with app.create() as ctx:
        if mode == "lease":
            await ctx.schedule_task(report, "busy", execute_at=now - datetime.timedelta(minutes=1))
            await ctx.run()
            return
        await ctx.schedule_task(report, "alice", interval=datetime.timedelta(hours=6), user="alice", n=1)
        await ctx.schedule_task(
            report, "bob:smith", schedule="30 9 * * *", timezone="Europe/Ljubljana", tags=["x", "y"]
        )
        await ctx.schedule_task(report, "once", execute_at=now + datetime.timedelta(hours=2), note="once")
        for i in range(8):
            await ctx.schedule_task(shard, f"s{i}", interval=datetime.timedelta(hours=3 + i), i=i)
        runner = asyncio.create_task(ctx.run())
        await asyncio.sleep(1.5)
        ctx.shutdown()
        await runner
        states = [state("heartbeat", None, await ctx.get_task(heartbeat))]
        for name in ("alice", "bob:smith", "once"):
            states.append(state("report", name, await ctx.get_task(report, name)))
        for i in range(8):
            states.append(state("shard", f"s{i}", await ctx.get_task(shard, f"s{i}")))
        print(json.dumps(states))

asyncio.run(main())
"""

#: The same app for Pyncette 2 (its backend is configured by the test or on the command line).
APP_SOURCE = """\
from datetime import timedelta

from pyncette import Context, Pyncette

app = Pyncette(poll_interval=timedelta(minutes=30))
RUNS: list[tuple[str, str | None, object]] = []


@app.task(interval=timedelta(days=1))
async def heartbeat(context: Context) -> None:
    RUNS.append(("heartbeat", None, context.scheduled_at))


@app.dynamic_task(lease_duration=timedelta(hours=1))
async def report(context: Context) -> None:
    RUNS.append(("report", context.task.name, context.scheduled_at))


@app.partitioned_task(partition_count=4)
async def shard(context: Context) -> None:
    RUNS.append(("shard", context.task.name, context.scheduled_at))
"""

#: Records per task in the data the 1.x script writes.
EXPECTED = {"heartbeat": 1, "report": 3, "shard": 8}


def write_legacy_data(factory_module: str, factory_name: str, options: dict[str, Any], mode: str = "data") -> Any:
    """Run the 1.x app; returns the states it printed (mode ``data``)."""
    done = run_legacy(LEGACY_SCRIPT, factory_module, factory_name, json.dumps(options), mode, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]) if mode == "data" else None


def load_app(path: Path) -> ModuleType:
    """Import the 2.x app module at ``path`` under a name of its own (so each test has fresh tasks)."""
    spec = importlib.util.spec_from_file_location(f"migapp_{uuid.uuid4().hex[:8]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pyncette ARGS`` in ``directory`` (where the app module is)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYNCETTE_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(directory), environment.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pyncette", *args],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def counts(report: dict[str, Any], field: str) -> dict[str, int]:
    return {name: task[field] for name, task in report["tasks"].items()}


async def check_states(app: Pyncette, legacy_states: list[dict[str, Any]]) -> dict[tuple[str, str | None], datetime]:
    """Every 1.x state is present in 2.x and equal; returns the next run of each."""
    tasks = {task.name: task for task in app.tasks}
    scheduled: dict[tuple[str, str | None], datetime] = {}
    async with app.create() as ctx:
        for old in legacy_states:
            state = await ctx.get_task(tasks[old["template"]], old["name"])
            assert state is not None, old
            task = state.task
            expected_at = datetime.fromisoformat(old["scheduled_at"])
            # Backends may round stored times (Redis keeps epoch seconds as a float): the contract asks for ms.
            assert abs(state.scheduled_at - expected_at) < timedelta(milliseconds=1), old
            assert state.locked_until is None
            scheduled[(old["template"], old["name"])] = state.scheduled_at
            if old["name"] is None:
                continue
            assert task.name == old["name"]
            assert task.extra_args == old["args"]
            assert task.cron == old["schedule"]
            assert task.timezone == old["timezone"]
            assert (task.interval.total_seconds() if task.interval else None) == old["interval"]
            at = datetime.fromisoformat(old["execute_at"]) if old["execute_at"] else None
            assert task.execute_at == at
    return scheduled


async def check_runs(module: ModuleType, scheduled: dict[tuple[str, str | None], datetime]) -> None:
    """On a virtual clock from now to just past the last migrated next run, each run happens exactly once,
    the first of each at its migrated time."""
    clock = VirtualClock(datetime.now(timezone.utc))
    async with module.app.create(clock=clock) as ctx, running(ctx):
        # The loop wakes at least every poll interval (30 virtual minutes here), so an hour past the last one
        # is late enough for every run due by then.
        await clock.advance_to(max(scheduled.values()) + timedelta(hours=1))
    runs: list[tuple[str, str | None, datetime]] = module.RUNS
    doubled = [run for run, count in Counter(runs).items() if count > 1]
    assert not doubled
    for key, at in scheduled.items():
        first = min(when for template, name, when in runs if (template, name) == key)
        assert abs(first - at) < timedelta(milliseconds=1), key


# -------------------------------------------------------------------------------------------------
# Redis
# -------------------------------------------------------------------------------------------------

pytestmark = pytest.mark.realtime


@pytest.fixture
def options(redis_url: str) -> Iterator[dict[str, Any]]:
    """A fresh namespace; every key of it (1.x, backup and 2.x) is deleted afterwards."""
    opts = {"redis_url": redis_url, "redis_namespace": f"mig{uuid.uuid4().hex[:12]}"}
    yield opts
    anyio.run(delete_namespace, opts)


async def delete_namespace(options: dict[str, Any]) -> None:
    await backend.purge(backend.settings(options))
    client = redis.asyncio.Redis.from_url(options["redis_url"], decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"pyncette:{options['redis_namespace']}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


async def snapshot(options: dict[str, Any]) -> dict[str, Any]:
    """Every key of the namespace (1.x and 2.x) with its content."""
    client = redis.asyncio.Redis.from_url(options["redis_url"], decode_responses=True)
    found: dict[str, Any] = {}
    try:
        namespace = options["redis_namespace"]
        for pattern in (f"pyncette:{namespace}:*", f"pyncette:{{{namespace}:*"):
            async for key in client.scan_iter(match=pattern, count=1000):
                kind = await client.type(key)
                if kind == "hash":
                    found[key] = await client.hgetall(key)
                elif kind == "zset":
                    found[key] = await client.zrange(key, 0, -1, withscores=True)
                else:
                    found[key] = await client.get(key)
    finally:
        await client.aclose()
    return found


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "migapp.py").write_text(APP_SOURCE)
    return tmp_path


def cli_args(options: dict[str, Any]) -> list[str]:
    return ["--backend", "redis", *(f"-o{key}={value}" for key, value in options.items())]


def app_module(app_dir: Path, options: dict[str, Any]) -> ModuleType:
    module = load_app(app_dir / "migapp.py")
    module.app.configure(backend="redis", **options)
    return module


def legacy_data(options: dict[str, Any], mode: str = "data") -> Any:
    return write_legacy_data("pyncette.redis", "redis_repository", options, mode)


async def migrate_in_process(module: ModuleType, options: dict[str, Any], **flags: Any) -> MigrationReport:
    settings = backend.settings(options)
    store_context = backend.legacy(settings)
    assert store_context is not None
    async with store_context as store:
        return await migrate(
            store, lambda: backend.open(settings), module.app.tasks, now=datetime.now(timezone.utc), **flags
        )


def test_backend_knows_the_1x_layout() -> None:
    assert isinstance(backend, Backend)
    assert backend.legacy(backend.settings({})) is not None


def test_refuses_a_cluster(redis_url: str) -> None:
    store_context = backend.legacy(backend.settings({"redis_url": redis_url, "redis_cluster": True}))
    assert store_context is not None

    async def enter() -> None:
        async with store_context:
            pass

    with pytest.raises(ConfigurationError, match="did not run on Redis Cluster"):
        anyio.run(enter)


def test_migrate_through_the_cli(options: dict[str, Any], app_dir: Path) -> None:
    states = legacy_data(options)
    assert len(states) == sum(EXPECTED.values())

    first = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--json", *cli_args(options))
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["found"] and report["set_aside"] and not report["dry_run"]
    assert report["live_leases"] == 0 and report["failed"] == 0
    assert report["where"].startswith(f"Redis namespace {options['redis_namespace']!r} at ")
    assert counts(report, "migrated") == EXPECTED
    assert counts(report, "already_present") == {name: 0 for name in EXPECTED}

    module = app_module(app_dir, options)
    scheduled = anyio.run(check_states, module.app, states)

    # Running again changes nothing: everything is already present.
    before = anyio.run(snapshot, options)
    second = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--json", *cli_args(options))
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert not again["set_aside"]
    assert counts(again, "migrated") == {name: 0 for name in EXPECTED}
    assert counts(again, "already_present") == EXPECTED
    assert anyio.run(snapshot, options) == before

    # Dropping the backup removes every 1.x key and keeps the 2.x ones.
    third = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--drop-1x-backup", "--json", *cli_args(options))
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["backup_dropped"]
    left = anyio.run(snapshot, options)
    assert [key for key in left if key.startswith(f"pyncette:{options['redis_namespace']}:")] == []
    assert left == {key: value for key, value in before.items() if key.startswith("pyncette:{")}
    fourth = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", *cli_args(options))
    assert fourth.returncode == 0, fourth.stderr
    assert "no Pyncette 1.x data found" in fourth.stdout

    anyio.run(check_runs, module, scheduled)


def test_dry_run_writes_nothing(options: dict[str, Any], app_dir: Path) -> None:
    legacy_data(options)
    before = anyio.run(snapshot, options)
    assert before and all(not key.startswith("pyncette:{") for key in before)
    done = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--dry-run", "--json", *cli_args(options))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["found"] and report["dry_run"] and not report["set_aside"]
    assert anyio.run(snapshot, options) == before


def test_dry_run_after_set_aside_counts_without_writing(options: dict[str, Any], app_dir: Path) -> None:
    states = legacy_data(options)
    module = app_module(app_dir, options)

    async def scenario() -> None:
        await migrate_in_process(module, options)
        await backend.purge(backend.settings(options))  # the 2.x records only: the backup stays
        before = await snapshot(options)
        report = await migrate_in_process(module, options, dry_run=True)
        assert report.found and report.dry_run and not report.set_aside
        assert {name: task.migrated for name, task in report.tasks.items()} == EXPECTED
        assert await snapshot(options) == before
        report = await migrate_in_process(module, options)
        assert {name: task.migrated for name, task in report.tasks.items()} == EXPECTED

    anyio.run(scenario)
    anyio.run(check_states, module.app, states)


def test_live_leases_refuse_unless_forced(options: dict[str, Any], app_dir: Path) -> None:
    legacy_data(options, mode="lease")
    before = anyio.run(snapshot, options)
    refused = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", *cli_args(options))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "1 record(s)" in refused.stderr and "live lease" in refused.stderr and "--force" in refused.stderr
    assert anyio.run(snapshot, options) == before

    forced = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--force", "--json", *cli_args(options))
    assert forced.returncode == 0, forced.stderr
    report = json.loads(forced.stdout)
    assert report["live_leases"] == 1 and counts(report, "migrated") == {"heartbeat": 1, "report": 1}

    module = app_module(app_dir, options)

    async def check() -> None:
        async with module.app.create() as ctx:
            state = await ctx.get_task(module.report, "busy")
            assert state is not None and state.locked_until is None

    anyio.run(check)


def test_interrupted_set_aside_is_completed_by_the_next_run(
    options: dict[str, Any], app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = legacy_data(options)
    module = app_module(app_dir, options)
    monkeypatch.setattr(legacy_module, "_RENAME_BATCH", 3)
    renames = 0
    original = legacy_module.RedisLegacyStore._rename

    async def crashing(self: legacy_module.RedisLegacyStore, keys: list[str]) -> None:
        nonlocal renames
        renames += 1
        if renames == 3:
            raise RuntimeError("crash in the middle of setting aside")
        await original(self, keys)

    monkeypatch.setattr(legacy_module.RedisLegacyStore, "_rename", crashing)

    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            await migrate_in_process(module, options)
        keys = await snapshot(options)
        backup = f"pyncette:{options['redis_namespace']}:1x-backup:"
        assert any(key.startswith(backup) for key in keys)
        assert any(key.startswith(f"pyncette:{options['redis_namespace']}:task:") for key in keys)
        store_context = backend.legacy(backend.settings(options))
        assert store_context is not None
        async with store_context as store:
            assert await store.has_live_data() and not await store.has_backup()
        monkeypatch.setattr(legacy_module.RedisLegacyStore, "_rename", original)
        report = await migrate_in_process(module, options)
        assert report.set_aside and report.failed == 0
        assert {name: task.migrated for name, task in report.tasks.items()} == EXPECTED

    anyio.run(scenario)
    anyio.run(check_states, module.app, states)


def test_nothing_to_migrate(options: dict[str, Any], app_dir: Path) -> None:
    done = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--json", *cli_args(options))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert not report["found"] and report["tasks"] == {}
