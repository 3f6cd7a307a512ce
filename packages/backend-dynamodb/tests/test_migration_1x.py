"""``pyncette migrate --from-1x`` on DynamoDB (moto), with 1.x items written by pyncette 1.1.0 itself (see
pyncette_conformance.upgrade); below the suite, what is particular to DynamoDB."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

import pyncette_dynamodb._legacy as legacy_module
from pyncette.errors import ConfigurationError
from pyncette_conformance.upgrade import (
    UpgradeSuite,
    UpgradeTarget,
    check_migrated,
    cleanup,
    create_legacy_data,
    expected_counts,
    legacy_state,
    migrate_in_process,
)
from pyncette_dynamodb import backend

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(300)]

Table = dict[tuple[str, str], dict[str, Any]]


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


async def snapshot(options: dict[str, Any]) -> tuple[Table | None, Table | None]:
    """The table and its backup table."""
    name = options["dynamodb_table_name"]
    endpoint = options["dynamodb_endpoint"]
    return await scan(endpoint, name), await scan(endpoint, name + legacy_module.BACKUP_SUFFIX)


def legacy_shaped(items: Table | None) -> list[tuple[str, str]]:
    return sorted(key for key, item in (items or {}).items() if "version" in item and "scheduled_at" not in item)


def dynamodb_target(endpoint: str, table: str | None = None, prefix: str | None = None) -> UpgradeTarget:
    """A fresh table (or ``table``); without ``prefix``, 1.x writes with its default (empty) partition prefix
    and 2.x reads it with its own default. Cleaning up deletes the table and its backup table."""
    name = table or f"mig_{uuid.uuid4().hex[:12]}"
    options = {"dynamodb_endpoint": endpoint, "dynamodb_region_name": "us-east-1", "dynamodb_table_name": name}
    if prefix is not None:
        options["dynamodb_partition_prefix"] = prefix
    return UpgradeTarget(
        "dynamodb",
        options,
        snapshot=lambda: snapshot(options),
        remove_rest=lambda: delete_tables(endpoint, [name, name + legacy_module.BACKUP_SUFFIX]),
    )


class TestDynamoDBMigration(UpgradeSuite):
    @pytest.fixture
    def upgrade_target(self, dynamodb_endpoint: str) -> UpgradeTarget:
        return dynamodb_target(dynamodb_endpoint)


@pytest.fixture
async def target(dynamodb_endpoint: str) -> AsyncIterator[UpgradeTarget]:
    target = dynamodb_target(dynamodb_endpoint, prefix="app")
    try:
        yield target
    finally:
        await cleanup(target)


def test_refuses_a_table_name_too_long_for_its_backup(dynamodb_endpoint: str) -> None:
    store_context = backend.legacy(backend.settings(dynamodb_target(dynamodb_endpoint, "t" * 250).options))
    assert store_context is not None

    async def enter() -> None:
        async with store_context:
            pass

    with pytest.raises(ConfigurationError, match=r"too long to migrate from 1\.x"):
        anyio.run(enter)


@pytest.mark.anyio
async def test_the_backup_keeps_the_items_and_dropping_it_keeps_the_2x_ones(dynamodb_endpoint: str) -> None:
    # The 1.x app used 1.x's default (empty) partition prefix; 2.x its own default, which reads both.
    target = dynamodb_target(dynamodb_endpoint)
    table = target.options["dynamodb_table_name"]
    try:
        expected = await create_legacy_data(target)
        original, backup = await snapshot(target.options)
        assert original is not None and backup is None
        assert len(legacy_shaped(original)) == len(original) == len(expected)

        report = await migrate_in_process(target)
        assert report.where.startswith(f"DynamoDB table {table!r}, partition prefix '' and 'pyncette', at ")
        assert report.set_aside and report.failed == 0
        # The originals moved, unchanged, to the backup table; the table holds the 2.x records only.
        after, backup = await snapshot(target.options)
        assert after is not None and backup is not None
        assert legacy_shaped(after) == []
        assert len(after) == len(expected)
        assert {key: item for key, item in backup.items() if key[0] != legacy_module.MARKER_PARTITION} == original

        report = await migrate_in_process(target, drop_backup=True)
        assert report.backup_dropped
        assert await snapshot(target.options) == (after, None)
    finally:
        await cleanup(target)


@pytest.mark.anyio
async def test_other_prefixes_are_left_alone(dynamodb_endpoint: str) -> None:
    mine = dynamodb_target(dynamodb_endpoint, prefix="mine")
    theirs = dynamodb_target(dynamodb_endpoint, mine.options["dynamodb_table_name"], prefix="theirs")
    table = mine.options["dynamodb_table_name"]
    try:
        expected = await create_legacy_data(mine)
        await create_legacy_data(theirs)
        before, _ = await snapshot(mine.options)
        assert before is not None
        other = {key: item for key, item in before.items() if key[0].startswith("theirs:")}
        assert len(other) == len(expected)

        report = await migrate_in_process(mine)
        assert report.where.startswith(f"DynamoDB table {table!r}, partition prefix 'mine', at ")
        assert {name: task.migrated for name, task in report.tasks.items()} == expected_counts(expected)
        await check_migrated(mine, expected)
        after, backup = await snapshot(mine.options)
        assert after is not None and backup is not None
        assert {key: item for key, item in after.items() if key[0].startswith("theirs:")} == other
        assert all(key[0].startswith("mine:") or key[0] == legacy_module.MARKER_PARTITION for key in backup)

        # The other app's 1.x data is still there to migrate, under its own prefix.
        assert await legacy_state(theirs) == (True, False)
        report = await migrate_in_process(theirs)
        assert {name: task.migrated for name, task in report.tasks.items()} == expected_counts(expected)
        # Dropping one prefix's backup keeps the other's (and so the backup table).
        report = await migrate_in_process(theirs, drop_backup=True)
        assert report.backup_dropped
        _, backup = await snapshot(mine.options)
        assert backup is not None and backup and all(not key[0].startswith("theirs:") for key in backup)
        assert any(key == (legacy_module.MARKER_PARTITION, "mine") for key in backup)
    finally:
        await cleanup(theirs)
        await cleanup(mine)


@pytest.mark.anyio
async def test_an_interrupted_set_aside_is_counted_by_a_dry_run_and_completed_by_the_next_run(
    target: UpgradeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = await create_legacy_data(target)
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
    with pytest.raises(RuntimeError):
        await migrate_in_process(target)
    assert await legacy_state(target) == (True, False)
    monkeypatch.setattr(legacy_module.DynamoDBLegacyStore, "_write", original)

    # A dry run reads each item once (the second page is in both tables) and changes nothing.
    interrupted = await snapshot(target.options)
    table_items, backup = interrupted
    assert table_items is not None and backup is not None
    assert set(table_items) & set(backup), "the crash was meant to leave a page in both tables"
    report = await migrate_in_process(target, dry_run=True)
    assert report.failed == 0 and not report.set_aside
    assert {name: task.migrated for name, task in report.tasks.items()} == expected_counts(expected)
    assert await snapshot(target.options) == interrupted

    report = await migrate_in_process(target)
    assert report.set_aside and report.failed == 0
    assert {name: task.migrated for name, task in report.tasks.items()} == expected_counts(expected)
    table_items, backup = await snapshot(target.options)
    assert legacy_shaped(table_items) == [] and backup is not None and len(backup) == len(expected) + 1
    await check_migrated(target, expected)
