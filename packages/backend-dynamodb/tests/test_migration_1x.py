"""``pyncette migrate --from-1x`` on DynamoDB (moto), with 1.x items written by pyncette 1.1.0 itself."""

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
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

import pyncette_dynamodb._legacy as legacy_module
from pyncette import Pyncette
from pyncette.errors import ConfigurationError
from pyncette.migration import MigrationReport, migrate
from pyncette.testing import VirtualClock, running
from pyncette_conformance.legacy import run_legacy
from pyncette_dynamodb import backend

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
# DynamoDB
# -------------------------------------------------------------------------------------------------

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(300)]

Table = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture
def table(dynamodb_endpoint: str) -> Iterator[str]:
    """A fresh table name; the table and its backup table are deleted afterwards."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    yield name
    anyio.run(delete_tables, dynamodb_endpoint, [name, name + legacy_module.BACKUP_SUFFIX])


async def _raw(endpoint: str) -> Any:
    return get_session().create_client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")


async def delete_tables(endpoint: str, names: list[str]) -> None:
    async with await _raw(endpoint) as client:
        for name in names:
            try:
                await client.delete_table(TableName=name)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise


async def scan(endpoint: str, name: str) -> Table | None:
    """Every item of a table by key, or ``None`` when the table does not exist."""
    found: Table = {}
    async with await _raw(endpoint) as client:
        paginator = client.get_paginator("scan")
        try:
            async for page in paginator.paginate(TableName=name, ConsistentRead=True):
                for item in page["Items"]:
                    found[(item["partition_id"]["S"], item["task_id"]["S"])] = item
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
    return found


def snapshot(endpoint: str, name: str) -> tuple[Table | None, Table | None]:
    """The table and its backup table."""
    return anyio.run(scan, endpoint, name), anyio.run(scan, endpoint, name + legacy_module.BACKUP_SUFFIX)


def legacy_options(endpoint: str, name: str, prefix: str | None = None) -> dict[str, Any]:
    """The 1.x app's options (1.x's default partition prefix is empty)."""
    options = {"dynamodb_endpoint": endpoint, "dynamodb_region_name": "us-east-1", "dynamodb_table_name": name}
    if prefix is not None:
        options["dynamodb_partition_prefix"] = prefix
    return options


def legacy_data(options: dict[str, Any], mode: str = "data") -> Any:
    return write_legacy_data("pyncette.dynamodb", "dynamodb_repository", options, mode)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "migapp.py").write_text(APP_SOURCE)
    return tmp_path


def cli_args(options: dict[str, Any]) -> list[str]:
    return ["--backend", "dynamodb", *(f"-o{key}={value}" for key, value in options.items())]


def app_module(app_dir: Path, options: dict[str, Any]) -> ModuleType:
    module = load_app(app_dir / "migapp.py")
    module.app.configure(backend="dynamodb", **options)
    return module


async def migrate_in_process(module: ModuleType, options: dict[str, Any], **flags: Any) -> MigrationReport:
    settings = backend.settings(options)
    store_context = backend.legacy(settings)
    assert store_context is not None
    async with store_context as store:
        return await migrate(
            store, lambda: backend.open(settings), module.app.tasks, now=datetime.now(timezone.utc), **flags
        )


def legacy_shaped(items: Table | None) -> list[tuple[str, str]]:
    return sorted(key for key, item in (items or {}).items() if "version" in item and "scheduled_at" not in item)


def test_refuses_a_table_name_too_long_for_its_backup(dynamodb_endpoint: str) -> None:
    store_context = backend.legacy(backend.settings(legacy_options(dynamodb_endpoint, "t" * 250)))
    assert store_context is not None

    async def enter() -> None:
        async with store_context:
            pass

    with pytest.raises(ConfigurationError, match=r"too long to migrate from 1\.x"):
        anyio.run(enter)


def test_migrate_through_the_cli(dynamodb_endpoint: str, table: str, app_dir: Path) -> None:
    # The 1.x app used 1.x's default (empty) partition prefix; the 2.x app the 2.x default.
    states = legacy_data(legacy_options(dynamodb_endpoint, table))
    assert len(states) == sum(EXPECTED.values())
    options = legacy_options(dynamodb_endpoint, table)
    original, _ = snapshot(dynamodb_endpoint, table)
    assert original is not None and len(legacy_shaped(original)) == sum(EXPECTED.values())

    first = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--json", *cli_args(options))
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["found"] and report["set_aside"] and not report["dry_run"]
    assert report["live_leases"] == 0 and report["failed"] == 0
    assert report["where"].startswith(f"DynamoDB table {table!r}, partition prefix '' and 'pyncette', at ")
    assert counts(report, "migrated") == EXPECTED
    # The originals moved, unchanged, to the backup table; the table holds the 2.x records only.
    after, backup = snapshot(dynamodb_endpoint, table)
    assert after is not None and backup is not None
    assert legacy_shaped(after) == []
    assert len(after) == sum(EXPECTED.values())
    assert {key: item for key, item in backup.items() if key[0] != legacy_module.MARKER_PARTITION} == original

    module = app_module(app_dir, options)
    scheduled = anyio.run(check_states, module.app, states)

    second = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--json", *cli_args(options))
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert not again["set_aside"]
    assert counts(again, "migrated") == {name: 0 for name in EXPECTED}
    assert counts(again, "already_present") == EXPECTED
    assert snapshot(dynamodb_endpoint, table) == (after, backup)

    third = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--drop-1x-backup", "--json", *cli_args(options))
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["backup_dropped"]
    assert snapshot(dynamodb_endpoint, table) == (after, None)
    fourth = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", *cli_args(options))
    assert fourth.returncode == 0, fourth.stderr
    assert "no Pyncette 1.x data found" in fourth.stdout

    anyio.run(check_runs, module, scheduled)


def test_dry_run_writes_nothing(dynamodb_endpoint: str, table: str, app_dir: Path) -> None:
    options = legacy_options(dynamodb_endpoint, table, "app")
    legacy_data(options)
    before = snapshot(dynamodb_endpoint, table)
    assert before[1] is None
    done = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--dry-run", "--json", *cli_args(options))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["found"] and report["dry_run"] and not report["set_aside"]
    assert snapshot(dynamodb_endpoint, table) == before


def test_other_prefixes_are_left_alone(dynamodb_endpoint: str, table: str, app_dir: Path) -> None:
    mine, theirs = legacy_options(dynamodb_endpoint, table, "mine"), legacy_options(dynamodb_endpoint, table, "theirs")
    states = legacy_data(mine)
    legacy_data(theirs)
    before, _ = snapshot(dynamodb_endpoint, table)
    assert before is not None
    other = {key: item for key, item in before.items() if key[0].startswith("theirs:")}
    assert len(other) == sum(EXPECTED.values())

    module = app_module(app_dir, mine)
    report = anyio.run(migrate_in_process, module, mine)
    assert report.where.startswith(f"DynamoDB table {table!r}, partition prefix 'mine', at ")
    assert {name: task.migrated for name, task in report.tasks.items()} == EXPECTED
    anyio.run(check_states, module.app, states)
    after, backup = snapshot(dynamodb_endpoint, table)
    assert after is not None and backup is not None
    assert {key: item for key, item in after.items() if key[0].startswith("theirs:")} == other
    assert all(key[0].startswith("mine:") or key[0] == legacy_module.MARKER_PARTITION for key in backup)

    # The other app's 1.x data is still there to migrate, under its own prefix.
    module = app_module(app_dir, theirs)
    report = anyio.run(migrate_in_process, module, theirs)
    assert {name: task.migrated for name, task in report.tasks.items()} == EXPECTED
    # Dropping one prefix's backup keeps the other's (and so the backup table).
    report = anyio.run(lambda: migrate_in_process(module, theirs, drop_backup=True))
    assert report.backup_dropped
    _, backup = snapshot(dynamodb_endpoint, table)
    assert backup is not None and backup and all(key[0] != "theirs:" for key in backup)
    assert any(key == (legacy_module.MARKER_PARTITION, "mine") for key in backup)


def test_live_leases_refuse_unless_forced(dynamodb_endpoint: str, table: str, app_dir: Path) -> None:
    options = legacy_options(dynamodb_endpoint, table, "app")
    legacy_data(options, mode="lease")
    before = snapshot(dynamodb_endpoint, table)
    refused = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", *cli_args(options))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "1 record(s)" in refused.stderr and "live lease" in refused.stderr and "--force" in refused.stderr
    assert snapshot(dynamodb_endpoint, table) == before

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
    dynamodb_endpoint: str, table: str, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = legacy_options(dynamodb_endpoint, table, "app")
    states = legacy_data(options)
    module = app_module(app_dir, options)
    monkeypatch.setattr(legacy_module, "_SCAN_LIMIT", 3)
    writes = 0
    original = legacy_module.DynamoDBLegacyStore._write

    async def crashing(self: legacy_module.DynamoDBLegacyStore, name: str, requests: list[dict[str, Any]]) -> None:
        nonlocal writes
        writes += 1
        if writes == 4:  # the second page is copied, not yet deleted
            raise RuntimeError("crash in the middle of setting aside")
        await original(self, name, requests)

    monkeypatch.setattr(legacy_module.DynamoDBLegacyStore, "_write", crashing)

    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            await migrate_in_process(module, options)
        store_context = backend.legacy(backend.settings(options))
        assert store_context is not None
        async with store_context as store:
            assert await store.has_live_data() and not await store.has_backup()
        monkeypatch.setattr(legacy_module.DynamoDBLegacyStore, "_write", original)
        report = await migrate_in_process(module, options)
        assert report.set_aside and report.failed == 0
        assert {name: task.migrated for name, task in report.tasks.items()} == EXPECTED

    anyio.run(scenario)
    table_items, backup = snapshot(dynamodb_endpoint, table)
    assert legacy_shaped(table_items) == [] and backup is not None and len(backup) == sum(EXPECTED.values()) + 1
    anyio.run(check_states, module.app, states)


def test_nothing_to_migrate(dynamodb_endpoint: str, table: str, app_dir: Path) -> None:
    options = legacy_options(dynamodb_endpoint, table, "app")
    done = run_cli(app_dir, "migrate", "migapp:app", "--from-1x", "--json", *cli_args(options))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert not report["found"] and report["tasks"] == {}
    assert snapshot(dynamodb_endpoint, table) == (None, None)
