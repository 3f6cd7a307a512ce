"""``pyncette migrate --from-1x`` on Redis, with 1.x data written by pyncette 1.1.0 itself (see
pyncette_conformance.upgrade); below the suite, what is particular to Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio

import pyncette_redis._legacy as legacy_module
from pyncette.abc import Backend
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
from pyncette_redis import backend

pytestmark = pytest.mark.realtime


async def snapshot(options: dict[str, Any]) -> dict[str, Any]:
    """Every key of the namespace (1.x ``pyncette:N:``, its backup and 2.x ``pyncette:{N:``) with its content."""
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


async def delete_1x_keys(options: dict[str, Any]) -> None:
    """The 1.x keys ``purge`` leaves (it deletes the 2.x ones)."""
    client = redis.asyncio.Redis.from_url(options["redis_url"], decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"pyncette:{options['redis_namespace']}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


def redis_target(redis_url: str) -> UpgradeTarget:
    """A fresh namespace."""
    options = {"redis_url": redis_url, "redis_namespace": f"mig{uuid.uuid4().hex[:12]}"}
    return UpgradeTarget(
        "redis", options, snapshot=lambda: snapshot(options), remove_rest=lambda: delete_1x_keys(options)
    )


class TestRedisMigration(UpgradeSuite):
    @pytest.fixture
    def upgrade_target(self, redis_url: str) -> UpgradeTarget:
        return redis_target(redis_url)


@pytest.fixture
async def target(redis_url: str) -> AsyncIterator[UpgradeTarget]:
    target = redis_target(redis_url)
    try:
        yield target
    finally:
        await cleanup(target)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.mark.anyio
@pytest.mark.timeout(300)
async def test_the_backup_is_the_renamed_keys_and_dropping_it_keeps_the_2x_keys(target: UpgradeTarget) -> None:
    namespace = target.options["redis_namespace"]
    legacy, backup, modern = f"pyncette:{namespace}:", f"pyncette:{namespace}:1x-backup:", f"pyncette:{{{namespace}:"
    await create_legacy_data(target)
    before = await snapshot(target.options)
    assert before and all(key.startswith(legacy) for key in before)

    report = await migrate_in_process(target)
    assert report.where.startswith(f"Redis namespace {namespace!r} at ")
    assert report.set_aside and report.failed == 0
    after = await snapshot(target.options)
    # Every 1.x key, unchanged, under the backup prefix; besides them only the marker and the 2.x keys.
    renamed = {key: value for key, value in after.items() if key.startswith(backup)}
    assert renamed == {backup + key[len(legacy) :]: value for key, value in before.items()}
    assert set(after) - set(renamed) - {f"{legacy}1x-backup"} == {key for key in after if key.startswith(modern)}
    assert any(key.startswith(modern) for key in after)

    report = await migrate_in_process(target, drop_backup=True)
    assert report.backup_dropped
    left = await snapshot(target.options)
    assert [key for key in left if key.startswith(legacy)] == []
    assert left == {key: value for key, value in after.items() if key.startswith(modern)}


@pytest.mark.anyio
@pytest.mark.timeout(300)
async def test_an_interrupted_set_aside_is_counted_by_a_dry_run_and_completed_by_the_next_run(
    target: UpgradeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = target.options["redis_namespace"]
    expected = await create_legacy_data(target)
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
    with pytest.raises(RuntimeError):
        await migrate_in_process(target)
    keys = await snapshot(target.options)
    assert any(key.startswith(f"pyncette:{namespace}:1x-backup:") for key in keys)
    assert any(key.startswith(f"pyncette:{namespace}:task:") for key in keys)
    assert await legacy_state(target) == (True, False)
    monkeypatch.setattr(legacy_module.RedisLegacyStore, "_rename", original)

    # A dry run reads each record once, wherever the interrupted run left it, and changes nothing.
    report = await migrate_in_process(target, dry_run=True)
    assert report.failed == 0 and not report.set_aside
    assert {name: task.migrated for name, task in report.tasks.items()} == expected_counts(expected)
    assert await snapshot(target.options) == keys

    report = await migrate_in_process(target)
    assert report.set_aside and report.failed == 0
    assert {name: task.migrated for name, task in report.tasks.items()} == expected_counts(expected)
    await check_migrated(target, expected)
