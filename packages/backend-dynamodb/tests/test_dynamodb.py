"""DynamoDB-specific tests: options, table schema, storage layout, request costs, errors and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

import pyncette_dynamodb._client as client_module
import pyncette_dynamodb._repository as repository_module
import pyncette_dynamodb._table as table_module
from pyncette import backends
from pyncette.abc import PARKED_AT, Completion, Lease, PauseRule, Record, RegisterMode, Repository
from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Option
from pyncette_dynamodb import DynamoDBRepository, backend, dynamodb_repository
from pyncette_dynamodb._codec import format_time, parse_time, rule_key

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)

#: The table schema of the seed documentation (Pyncette 1.x "Backends" page), verbatim.
SEED_SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "partition_id", "AttributeType": "S"},
        {"AttributeName": "ready_at", "AttributeType": "S"},
        {"AttributeName": "task_id", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "partition_id", "KeyType": "HASH"},
        {"AttributeName": "task_id", "KeyType": "RANGE"},
    ],
    "LocalSecondaryIndexes": [
        {
            "IndexName": "ready_at",
            "KeySchema": [
                {"AttributeName": "partition_id", "KeyType": "HASH"},
                {"AttributeName": "ready_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
}


def opened(options: dict[str, Any]) -> AbstractAsyncContextManager[Repository]:
    """Open a repository on raw options, as ``Pyncette(...)`` would."""
    return backend.open(backend.settings(options))


def unique() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def options(dynamodb_endpoint: str) -> AsyncIterator[dict[str, Any]]:
    """Options for a fresh table and prefix, purged afterwards."""
    opts: dict[str, Any] = {
        "dynamodb_endpoint": dynamodb_endpoint,
        "dynamodb_table_name": unique(),
        "dynamodb_partition_prefix": unique(),
    }
    yield opts
    with contextlib.suppress(Exception):
        await backend.purge(backend.settings({**opts, "dynamodb_skip_table_create": False}))


@pytest.fixture
async def raw(dynamodb_endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore client on the same endpoint, to inspect what the backend stored."""
    async with get_session().create_client("dynamodb", endpoint_url=dynamodb_endpoint) as client:
        yield client


@pytest.fixture
async def repository(options: dict[str, Any]) -> AsyncIterator[DynamoDBRepository]:
    async with opened(options) as repo:
        assert isinstance(repo, DynamoDBRepository)
        yield repo


def rec(name: str, at: datetime = T0, *, parent: str = "p", spec: str | None = '{"v": 1}') -> Record:
    return Record(parent=parent, name=name, spec=spec, scheduled_at=at)


async def claim(
    repo: Repository, parent: str = "p", *, limit: int = 100, token: str = "tok", now: datetime = T0
) -> list[Record]:
    return await repo.claim(parent, now=now, limit=limit, lease_until=now + LEASE, token=token)


# -- descriptor and options -----------------------------------------------------------------------


def test_descriptor_and_entry_point() -> None:
    assert backends.load("dynamodb") is backend
    assert dynamodb_repository is backend
    assert backend.capabilities.persistent
    assert backend.capabilities.coordinated
    assert backend.capabilities.asyncio_only
    legacy = {
        "dynamodb_region_name",
        "dynamodb_table_name",
        "dynamodb_endpoint",
        "dynamodb_partition_prefix",
        "dynamodb_skip_table_create",
    }
    assert legacy <= set(backend.options)
    assert all(isinstance(option, Option) and option.help for option in backend.options.values())
    # Only the prefix isolates: tests share one table per server, which keeps isolation cheap.
    assert [name for name, option in backend.options.items() if option.isolates] == ["dynamodb_partition_prefix"]
    assert {name for name, option in backend.options.items() if option.secret} == {
        "dynamodb_aws_access_key_id",
        "dynamodb_aws_secret_access_key",
        "dynamodb_aws_session_token",
    }


def test_defaults_are_those_of_1x() -> None:
    settings = backend.settings({})
    assert settings["dynamodb_table_name"] == "pyncette"
    assert settings["dynamodb_partition_prefix"] == "pyncette"
    assert settings["dynamodb_region_name"] is None
    assert settings["dynamodb_endpoint"] is None
    assert settings["dynamodb_skip_table_create"] is False
    assert settings["dynamodb_aws_access_key_id"] is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dynamodb_table_name", "tasks; DROP TABLE x"),
        ("dynamodb_table_name", "with-dash"),
        ("dynamodb_table_name", "ab"),
        ("dynamodb_table_name", "x" * 256),
        ("dynamodb_table_name", 42),
        ("dynamodb_partition_prefix", "a:b"),
        ("dynamodb_partition_prefix", ""),
        ("dynamodb_region_name", "Mars Base 1"),
        ("dynamodb_endpoint", "ftp://localhost:8000"),
        ("dynamodb_endpoint", "localhost:8000"),
        ("dynamodb_endpoint", "http://localhost:99999"),
        ("dynamodb_skip_table_create", "perhaps"),
        ("dynamodb_skip_table_create", 1),
        ("dynamodb_skip_table_create", 0),
        ("dynamodb_connect_timeout", -1),
        ("dynamodb_connect_timeout", "soon"),
        ("dynamodb_read_timeout", 0),
        ("dynamodb_retry_mode", "legacy"),
        ("dynamodb_max_attempts", 0),
        ("dynamodb_max_attempts", 2.5),
        ("dynamodb_max_pool_connections", "many"),
        ("dynamodb_aws_access_key_id", ""),
    ],
)
def test_bad_option_values_are_refused_naming_option(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.settings({key: value})
    assert key in str(info.value)


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="dynamodb_tabel_name"):
        backend.settings({"dynamodb_tabel_name": "x"})


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://user:hunter2@localhost:8000",
        "http://AKIDSECRETUSER@localhost:8000",
        "https://:hunter2@x",
        "http://localhost:8000/?token=hunter2",
        "http://localhost:8000/#hunter2",
    ],
)
def test_endpoint_with_credentials_is_refused_without_echoing_them(endpoint: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.settings({"dynamodb_endpoint": endpoint})
    message = str(info.value)
    assert "dynamodb_endpoint" in message
    assert "hunter2" not in message
    assert "AKIDSECRETUSER" not in message


@pytest.mark.parametrize(
    "given",
    [
        {"dynamodb_aws_access_key_id": "AKIDONLY"},
        {"dynamodb_aws_secret_access_key": "secret-only-1234"},
        {"dynamodb_aws_session_token": "token-only-1234"},
    ],
)
def test_partial_credentials_are_refused_without_echoing_them(given: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.settings(given)
    [value] = given.values()
    assert value not in str(info.value)


def test_text_forms_of_numbers_and_booleans_are_accepted() -> None:
    settings = backend.settings(
        {
            "dynamodb_skip_table_create": "true",
            "dynamodb_connect_timeout": "2.5",
            "dynamodb_read_timeout": timedelta(seconds=3),
            "dynamodb_max_attempts": "4",
        }
    )
    assert settings["dynamodb_skip_table_create"] is True
    assert (settings["dynamodb_connect_timeout"], settings["dynamodb_read_timeout"]) == (2.5, 3.0)
    assert settings["dynamodb_max_attempts"] == 4


def test_environment_variables_set_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCETTE_DYNAMODB_SKIP_TABLE_CREATE", "yes")
    monkeypatch.setenv("PYNCETTE_DYNAMODB_AWS_SECRET_ACCESS_KEY", "from-the-environment")
    found = backend.options.from_environment()
    assert found == {
        "dynamodb_skip_table_create": "yes",
        "dynamodb_aws_secret_access_key": "from-the-environment",
    }


def test_time_format_is_fixed_width_sortable_and_round_trips() -> None:
    times = [
        datetime(999, 1, 1, tzinfo=timezone.utc),
        datetime(2030, 1, 1, 12, 0, 0, 1, tzinfo=timezone.utc),
        datetime(2030, 1, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=2))),  # 11:00 UTC
        datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ]
    texts = [format_time(t) for t in times]
    assert len({len(t) for t in texts}) == 1
    assert format_time(times[1]) == "2030-01-01T12:00:00.000001Z"
    assert sorted(texts) == [format_time(t) for t in sorted(times)]
    for t, text in zip(times, texts, strict=False):
        assert parse_time(text) == t
        assert parse_time(text).utcoffset() == timedelta(0)


# -- table management -----------------------------------------------------------------------------


async def test_created_table_matches_the_seed_schema(repository: DynamoDBRepository) -> None:
    table = (await repository.client.describe_table(TableName=repository.table_name))["Table"]
    assert table["TableStatus"] == "ACTIVE"

    def by_name(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(items, key=lambda item: str(item["AttributeName"]))

    assert by_name(table["AttributeDefinitions"]) == by_name(SEED_SCHEMA["AttributeDefinitions"])
    assert table["KeySchema"] == SEED_SCHEMA["KeySchema"]
    [index] = table["LocalSecondaryIndexes"]
    [expected] = SEED_SCHEMA["LocalSecondaryIndexes"]
    assert index["IndexName"] == expected["IndexName"] == "ready_at"
    assert index["KeySchema"] == expected["KeySchema"]
    assert index["Projection"] == expected["Projection"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert not table.get("GlobalSecondaryIndexes")


async def test_skip_table_create_refuses_a_missing_table_and_creates_nothing(options: dict[str, Any], raw: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        async with opened({**options, "dynamodb_skip_table_create": True}):
            pass
    message = str(info.value)
    assert options["dynamodb_table_name"] in message
    assert "dynamodb_skip_table_create" in message
    with pytest.raises(ClientError) as missing:
        await raw.describe_table(TableName=options["dynamodb_table_name"])
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_skip_table_create_uses_an_existing_table(options: dict[str, Any]) -> None:
    async with opened(options) as first:
        await first.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    async with opened({**options, "dynamodb_skip_table_create": True}) as second:
        assert await second.get("p", "a") is not None


async def test_concurrent_opens_create_the_table_once(options: dict[str, Any]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        repos = await asyncio.gather(*(stack.enter_async_context(opened(options)) for _ in range(4)))
        await repos[0].register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        for repo in repos:
            assert await repo.get("p", "a") is not None


async def test_table_created_by_someone_else_meanwhile_is_waited_for(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(options):
        pass
    # Simulate the race: our DescribeTable saw no table, then another instance created it first.
    real_describe = table_module._describe
    calls: list[int] = []

    async def stale_first(client: Any) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else await real_describe(client)

    monkeypatch.setattr(table_module, "_describe", stale_first)
    async with opened(options) as repo:
        await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    assert len(calls) == 2


async def test_incompatible_existing_table_is_refused(options: dict[str, Any], raw: Any) -> None:
    await raw.create_table(
        TableName=options["dynamodb_table_name"],
        AttributeDefinitions=[{"AttributeName": "partition_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "partition_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(ConfigurationError, match="incompatible schema"):
        async with opened(options):
            pass


async def test_purge_removes_only_its_prefix_and_drops_the_emptied_table(options: dict[str, Any], raw: Any) -> None:
    other = {**options, "dynamodb_partition_prefix": unique()}
    async with opened(options) as mine, opened(other) as theirs:
        await mine.register([rec(f"m{i}") for i in range(30)], now=T0, mode=RegisterMode.CREATE)
        await mine.pause(PauseRule("p", "m1", True), now=T0)
        await mine.pause(PauseRule("rules-only", "", True), now=T0)
        await theirs.register([rec("kept")], now=T0, mode=RegisterMode.CREATE)
        await theirs.pause(PauseRule("p", "", True), now=T0)
    await backend.purge(backend.settings(options))
    async with opened(options) as mine, opened(other) as theirs:
        assert (await mine.list_page("p", limit=100, continuation=None))[0] == []
        assert await mine.pauses("p") == await mine.pauses("rules-only") == []
        assert await theirs.get("p", "kept") is not None
        assert len(await theirs.pauses("p")) == 1
    await backend.purge(backend.settings({**other, "dynamodb_skip_table_create": True}))
    await raw.describe_table(TableName=options["dynamodb_table_name"])  # not ours to drop: kept
    await backend.purge(backend.settings(other))
    with pytest.raises(ClientError):
        await raw.describe_table(TableName=options["dynamodb_table_name"])
    await backend.purge(backend.settings(options))  # a missing table is nothing to purge


# -- storage layout -------------------------------------------------------------------------------


async def test_item_layout_through_a_lease_cycle(repository: DynamoDBRepository, options: dict[str, Any]) -> None:
    prefix = options["dynamodb_partition_prefix"]
    key = {"partition_id": {"S": f"{prefix}:odd/parent:1"}, "task_id": {"S": "job"}}

    async def item() -> dict[str, Any]:
        response = await repository.client.get_item(TableName=repository.table_name, Key=key, ConsistentRead=True)
        return {k: v["S"] for k, v in response["Item"].items()}

    await repository.register([rec("job", parent="odd/parent:1")], now=T0, mode=RegisterMode.UPDATE)
    assert await item() == {
        "partition_id": f"{prefix}:odd/parent:1",
        "task_id": "job",
        "scheduled_at": "2030-01-01T12:00:00.000000Z",
        "ready_at": "2030-01-01T12:00:00.000000Z",
        "spec": '{"v": 1}',
    }
    [claimed] = await claim(repository, "odd/parent:1")
    stored = await item()
    assert stored["locked_by"] == "tok"
    assert stored["locked_until"] == stored["ready_at"] == "2030-01-01T12:00:30.000000Z"
    assert claimed.locked_until == T0 + LEASE
    await repository.commit([Completion("odd/parent:1", "job", "tok", T0 + timedelta(hours=1))])
    stored = await item()
    assert "locked_by" not in stored
    assert "locked_until" not in stored
    assert stored["scheduled_at"] == stored["ready_at"] == "2030-01-01T13:00:00.000000Z"


async def test_update_on_expired_lease_keeps_the_lease_fields_and_ready_at(repository: DynamoDBRepository) -> None:
    await repository.register([rec("a", T0 - timedelta(minutes=5))], now=T0, mode=RegisterMode.UPDATE)
    await claim(repository)
    later = T0 + timedelta(minutes=1)
    sooner = rec("a", T0 - timedelta(minutes=10), spec='"new"')
    assert await repository.register([sooner], now=later, mode=RegisterMode.UPDATE) == [True]
    stored = await repository.get("p", "a")
    assert stored is not None
    assert (stored.spec, stored.scheduled_at, stored.locked_by) == ('"new"', T0 - timedelta(minutes=10), "tok")
    [again] = await repository.claim("p", now=later, limit=10, lease_until=later + LEASE, token="t2")
    assert again.locked_by == "t2"


async def test_extend_before_scheduled_time_keeps_record_unclaimable_until_then(
    repository: DynamoDBRepository,
) -> None:
    await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
    await claim(repository)
    assert await repository.extend(Lease("p", "a", "tok"), lease_until=T0 - timedelta(minutes=1)) is True
    assert await repository.claim("p", now=T0 - timedelta(seconds=1), limit=5, lease_until=T0, token="x") == []
    assert len(await repository.claim("p", now=T0, limit=5, lease_until=T0 + LEASE, token="y")) == 1


async def test_overlong_names_are_refused_up_front(repository: DynamoDBRepository) -> None:
    with pytest.raises(ConfigurationError, match="1024"):
        await repository.register([rec("x" * 1025)], now=T0, mode=RegisterMode.CREATE)


# -- corrupt records -------------------------------------------------------------------------------

#: Hand edits that leave an item in the ready_at index (so a claim finds it) but undecodable, and whether the
#: claim's lease (which sets locked_until and locked_by) leaves it undecodable.
DAMAGE: dict[str, tuple[str, dict[str, Any], bool]] = {
    "garbage scheduled_at": ("SET scheduled_at = :v", {":v": {"S": "garbage"}}, True),
    "numeric scheduled_at": ("SET scheduled_at = :v", {":v": {"N": "1893499200"}}, True),
    "missing scheduled_at": ("REMOVE scheduled_at", {}, True),
    "numeric spec": ("SET spec = :v", {":v": {"N": "42"}}, True),
    "garbage locked_until": ("SET locked_until = :v", {":v": {"S": "tomorrow"}}, False),
    "map locked_by": ("SET locked_by = :v", {":v": {"M": {"x": {"S": "y"}}}}, False),
}


async def damage(repo: DynamoDBRepository, options: dict[str, Any], name: str, how: str, parent: str = "p") -> None:
    expression, values, _ = DAMAGE[how]
    params: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
    await repo.client.update_item(
        TableName=repo.table_name,
        Key={"partition_id": {"S": f"{options['dynamodb_partition_prefix']}:{parent}"}, "task_id": {"S": name}},
        UpdateExpression=expression,
        **params,
    )


async def stored_item(repo: DynamoDBRepository, options: dict[str, Any], name: str) -> dict[str, Any]:
    key = {"partition_id": {"S": f"{options['dynamodb_partition_prefix']}:p"}, "task_id": {"S": name}}
    response = await repo.client.get_item(TableName=repo.table_name, Key=key, ConsistentRead=True)
    item: dict[str, Any] = response.get("Item", {})
    return item


async def test_corrupt_hook_record_is_leased_corrupt_and_parked_by_a_commit(
    repository: DynamoDBRepository, options: dict[str, Any]
) -> None:
    await repository.register([rec("a"), rec("b"), rec("c")], now=T0, mode=RegisterMode.CREATE)
    await repository.corrupt("p", "b")
    claimed = {r.name: r for r in await claim(repository)}
    assert sorted(claimed) == ["a", "b", "c"]
    bad = claimed["b"]
    assert bad.corrupt is not None and "scheduled_at" in bad.corrupt
    assert (bad.scheduled_at, bad.locked_by, bad.locked_until) == (PARKED_AT, "tok", T0 + LEASE)
    assert bad.spec == '{"v": 1}'
    assert claimed["a"].corrupt is None and claimed["c"].corrupt is None
    # The runtime parks it: the commit succeeds whatever scheduled_at holds, and repairs the index.
    assert await repository.commit([Completion("p", "b", "tok", PARKED_AT)]) == [True]
    parked = await repository.get("p", "b")
    assert parked is not None and parked.corrupt is None and parked.scheduled_at == PARKED_AT
    stored = await stored_item(repository, options, "b")
    assert stored["ready_at"]["S"] == stored["scheduled_at"]["S"] == "9999-12-31T23:59:59.000000Z"
    later = T0 + timedelta(days=1)
    assert "b" not in [r.name for r in await repository.claim("p", now=later, limit=10, lease_until=later, token="x")]


@pytest.mark.parametrize("how", sorted(DAMAGE))
async def test_damaged_items_never_fail_claim_get_or_list(
    repository: DynamoDBRepository, options: dict[str, Any], how: str
) -> None:
    await repository.register([rec(f"r{i}") for i in range(5)], now=T0, mode=RegisterMode.CREATE)
    await damage(repository, options, "r2", how)
    got = await repository.get("p", "r2")
    assert got is not None and got.corrupt is not None and got.name == "r2"
    page, _ = await repository.list_page("p", limit=10, continuation=None)
    assert [r.name for r in page] == [f"r{i}" for i in range(5)]
    assert [r.name for r in page if r.corrupt] == ["r2"]
    claimed = {r.name: r for r in await claim(repository)}
    assert sorted(claimed) == [f"r{i}" for i in range(5)]
    assert all(r.locked_by == "tok" for r in claimed.values())
    # The lease repairs damage in the lease fields; anything else comes back corrupt, for the runtime to park.
    assert [n for n, r in claimed.items() if r.corrupt] == (["r2"] if DAMAGE[how][2] else [])
    assert await repository.commit([Completion("p", "r2", "tok", PARKED_AT)]) == [True]
    parked = await repository.get("p", "r2")
    assert parked is not None and parked.scheduled_at == PARKED_AT and parked.locked_by is None


@pytest.mark.parametrize("how", ["garbage scheduled_at", "numeric scheduled_at", "garbage locked_until"])
@pytest.mark.parametrize("mode", [RegisterMode.UPDATE, RegisterMode.FORCE])
async def test_register_overwrites_a_corrupt_record_as_if_missing(
    repository: DynamoDBRepository, options: dict[str, Any], how: str, mode: RegisterMode
) -> None:
    await repository.register([rec("a", T0 - timedelta(hours=1))], now=T0, mode=RegisterMode.CREATE)
    await claim(repository)  # leased, so that UPDATE would otherwise leave it alone
    await damage(repository, options, "a", how)
    later = T0 + timedelta(hours=2)
    assert await repository.register([rec("a", later, spec='"new"')], now=T0, mode=mode) == [True]
    fresh = await repository.get("p", "a")
    assert fresh is not None and fresh.corrupt is None
    assert (fresh.spec, fresh.scheduled_at, fresh.locked_by, fresh.locked_until) == ('"new"', later, None, None)
    assert (await stored_item(repository, options, "a"))["ready_at"]["S"] == format_time(later)


async def test_register_create_leaves_a_corrupt_record(repository: DynamoDBRepository) -> None:
    await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    await repository.corrupt("p", "a")
    assert await repository.register([rec("a", spec='"new"')], now=T0, mode=RegisterMode.CREATE) == [False]
    kept = await repository.get("p", "a")
    assert kept is not None and kept.corrupt is not None and kept.spec == '{"v": 1}'


@pytest.mark.parametrize("how", ["garbage scheduled_at", "missing scheduled_at", "numeric scheduled_at"])
async def test_unlock_and_extend_of_a_record_damaged_while_leased_keep_it_claimable(
    repository: DynamoDBRepository, options: dict[str, Any], how: str
) -> None:
    await repository.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.CREATE)
    await claim(repository)
    await damage(repository, options, "a", how)
    await damage(repository, options, "b", how)
    assert await repository.unlock([Lease("p", "a", "tok")]) == [True]
    assert await repository.extend(Lease("p", "b", "tok"), lease_until=T0 + timedelta(seconds=1)) is True
    # Both come back from a claim (corrupt, leased) instead of vanishing from the index.
    later = T0 + timedelta(seconds=2)
    claimed = await repository.claim("p", now=later, limit=10, lease_until=later + LEASE, token="t2")
    assert sorted(r.name for r in claimed) == ["a", "b"]
    assert all(r.corrupt and r.locked_by == "t2" for r in claimed)


async def test_a_record_dynamodb_refuses_to_lease_is_set_aside_unleased(
    repository: DynamoDBRepository, options: dict[str, Any]
) -> None:
    await repository.register([rec("ok"), rec("huge")], now=T0, mode=RegisterMode.CREATE)
    # A hand-edited spec so large that the lease attributes would push the item over the size limit
    # (400 KB on DynamoDB, a little less on moto): the largest spec the server still stores.
    key = {"partition_id": {"S": f"{options['dynamodb_partition_prefix']}:p"}, "task_id": {"S": "huge"}}
    item = await stored_item(repository, options, "huge")
    fits, too_big = 300_000, 410 * 1024
    while too_big - fits > 16:
        size = (fits + too_big) // 2
        try:
            await repository.client.put_item(TableName=repository.table_name, Item={**item, "spec": {"S": "x" * size}})
            fits = size
        except ClientError:
            too_big = size
    item["spec"] = {"S": "x" * fits}
    await repository.client.put_item(TableName=repository.table_name, Item=item)
    claimed = {r.name: r for r in await claim(repository)}
    assert sorted(claimed) == ["huge", "ok"]
    huge = claimed["huge"]
    assert huge.corrupt is not None and "cannot be leased" in huge.corrupt
    assert huge.locked_by is None and huge.scheduled_at == T0
    stored = await repository.client.get_item(TableName=repository.table_name, Key=key, ConsistentRead=True)
    assert "ready_at" not in stored["Item"] and stored["Item"]["spec"] == item["spec"]  # out of the index, data kept
    later = T0 + timedelta(days=1)
    again = await repository.claim("p", now=later, limit=10, lease_until=later + LEASE, token="t2")
    assert [r.name for r in again] == ["ok"]  # its lease expired; "huge" is no longer claimable
    got = await repository.get("p", "huge")
    assert got is not None and got.corrupt is not None
    # register overwrites it, and it is claimable again.
    assert await repository.register([rec("huge")], now=T0, mode=RegisterMode.UPDATE) == [True]
    [fresh] = await repository.claim("p", now=later, limit=10, lease_until=later + LEASE, token="t3")
    assert fresh.name == "huge" and fresh.corrupt is None and fresh.locked_by == "t3"


# -- costs and concurrency ------------------------------------------------------------------------


async def test_requests_per_execution_stay_within_budget(repository: DynamoDBRepository) -> None:
    records = 500
    await repository.register([rec(f"r{i:03d}") for i in range(records)], now=T0, mode=RegisterMode.CREATE)
    calls: Counter[str] = Counter()
    sends: list[int] = []

    def count_call(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    def count_send(**_: Any) -> None:
        sends.append(1)

    repository.client.meta.events.register("before-call.dynamodb", count_call)
    repository.client.meta.events.register("before-send.dynamodb", count_send)
    executed = 0
    while batch := await claim(repository, limit=100):
        completions = [
            Completion("p", r.name, "tok", None if i % 2 else T0 + timedelta(days=1)) for i, r in enumerate(batch)
        ]
        assert all(await repository.commit(completions))
        executed += len(batch)
    assert executed == records
    total = sum(calls.values())
    assert total / records <= 2.2, dict(calls)
    assert len(sends) / records <= 2.2
    assert calls["Query"] == records // 100 + 1  # one page per batch, plus the empty last look
    assert calls["UpdateItem"] + calls["DeleteItem"] == 2 * records


async def test_claim_queries_only_due_records(repository: DynamoDBRepository) -> None:
    """The claim's Query asks the ready_at index for the due range, at most ``limit`` items: DynamoDB reads
    (and bills) only those, however many records are not yet due."""
    later = T0 + timedelta(days=30)
    await repository.register([rec(f"later-{i:04d}", later) for i in range(1000)], now=T0, mode=RegisterMode.CREATE)
    await repository.register(
        [rec(f"due-{i}", T0 - timedelta(seconds=i)) for i in range(8)], now=T0, mode=RegisterMode.CREATE
    )
    queries: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        queries.append((json.loads(params["body"]), {}))

    def answer(parsed: dict[str, Any], **_: Any) -> None:
        queries[-1][1].update(parsed)

    repository.client.meta.events.register("before-call.dynamodb.Query", record)
    repository.client.meta.events.register("after-call.dynamodb.Query", answer)
    claimed = await claim(repository, limit=5)
    assert [r.name for r in claimed] == [f"due-{i}" for i in (7, 6, 5, 4, 3)]  # earliest first
    [(request, response)] = queries
    assert request["IndexName"] == "ready_at"
    assert request["KeyConditionExpression"] == "partition_id = :p AND ready_at <= :now"
    assert request["Limit"] == 5
    assert response["Count"] == response["ScannedCount"] == 5


async def test_two_instances_never_share_a_record(options: dict[str, Any]) -> None:
    async with opened(options) as first, opened(options) as second:
        await first.register([rec(f"r{i}") for i in range(200)], now=T0, mode=RegisterMode.CREATE)
        results: dict[str, list[str]] = {}

        async def drain(repo: Repository, label: str) -> None:
            got: list[str] = []
            for _ in range(100):
                batch = await claim(repo, limit=20, token=label)
                got.extend(r.name for r in batch)
                if not batch and not await _any_due(repo):
                    break
            results[label] = got

        await asyncio.gather(drain(first, "a"), drain(first, "b"), drain(second, "c"), drain(second, "d"))
    names = [n for got in results.values() for n in got]
    assert sorted(names) == sorted(f"r{i}" for i in range(200))


async def _any_due(repo: Repository) -> bool:
    page, _ = await repo.list_page("p", limit=1000, continuation=None)
    return any(r.locked_by is None for r in page)


async def test_instances_sharing_a_parent_mostly_avoid_each_other(options: dict[str, Any]) -> None:
    """Two instances polling one parent: collisions (billed, failed writes) stay well below one per execution."""
    rounds, per_round = 10, 20
    async with opened(options) as first, opened(options) as second:
        records = [rec(f"r{i}", T0 + timedelta(seconds=i % rounds)) for i in range(rounds * per_round)]
        await first.register(records, now=T0, mode=RegisterMode.CREATE)
        writes: Counter[str] = Counter()

        def count(model: Any, **_: Any) -> None:
            writes[model.name] += 1

        for repo in (first, second):
            assert isinstance(repo, DynamoDBRepository)
            repo.client.meta.events.register("before-call.dynamodb", count)
        executed = 0
        for second_ in range(2 * rounds):
            now = T0 + timedelta(seconds=second_)

            async def poll(repo: Repository, token: str, now: datetime = now) -> int:
                got = await repo.claim("p", now=now, limit=100, lease_until=now + LEASE, token=token)
                next_runs = [Completion("p", r.name, token, r.scheduled_at + timedelta(seconds=rounds)) for r in got]
                assert all(await repo.commit(next_runs))
                return len(got)

            executed += sum(await asyncio.gather(poll(first, f"a{second_}"), poll(second, f"b{second_}")))
    assert executed >= rounds * per_round * 2 - 2 * per_round  # at most the last round's records left over
    lost = writes["UpdateItem"] - 2 * executed  # every execution is one claim write and one commit write
    assert lost / executed < 0.6, (lost, executed)


async def test_lost_race_skips_the_record_without_error(options: dict[str, Any]) -> None:
    async with opened(options) as first, opened(options) as second:
        assert isinstance(first, DynamoDBRepository)
        await first.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.CREATE)
        stolen: list[Record] = []

        async def steal_after_query(**_: Any) -> None:
            # Runs after first's Query answered and before its UpdateItems: the other instance wins "a".
            if not stolen:
                stolen.extend(await second.claim("p", now=T0, limit=1, lease_until=T0 + LEASE, token="thief"))

        first.client.meta.events.register("after-call.dynamodb.Query", steal_after_query)
        mine = await claim(first, token="mine")
    assert [r.name for r in stolen] == ["a"]
    assert [r.name for r in mine] == ["b"]


# -- errors and recovery --------------------------------------------------------------------------


class _FakeHttp:
    status_code = 400
    headers: dict[str, str] = {}


async def test_throttling_is_retried_then_reported_as_backend_error(
    repository: DynamoDBRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "BACKOFF_BASE", 0.01)
    await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    throttles = {"left": client_module.EXTRA_ATTEMPTS}

    def throttle(**_: Any) -> Any:
        # A short-circuit response skips botocore's own retries, so only the backend's extra rounds remain.
        if throttles["left"] > 0:
            throttles["left"] -= 1
            error = {"Code": "ThrottlingException", "Message": "Rate of requests exceeds the allowed throughput."}
            return _FakeHttp(), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    repository.client.meta.events.register_first("before-call.dynamodb.Query", throttle)
    assert [r.name for r in await claim(repository)] == ["a"]
    throttles["left"] = 100
    with pytest.raises(BackendError, match="ThrottlingException"):
        await claim(repository, token="other")


async def test_writes_whose_reply_was_lost_are_recognised_on_retry(cutting_proxy: Any, options: dict[str, Any]) -> None:
    """The server applies a write but its reply is lost; botocore resends it, and the failed condition
    that comes back is recognised as the echo of our own write."""
    proxy = cutting_proxy
    async with opened({**options, "dynamodb_endpoint": f"http://127.0.0.1:{proxy.port}"}) as repo:
        await repo.register([rec("a"), rec("b"), rec("c"), rec("d")], now=T0, mode=RegisterMode.CREATE)

        async def without_reply(call: Any) -> Any:
            proxy.drop_replies = 1
            result = await call
            assert proxy.drop_replies == 0, "no reply was dropped"
            return result

        assert [r.name for r in await without_reply(claim(repo, limit=1))] == ["a"]
        assert sorted(r.name for r in await without_reply(claim(repo))) == ["b", "c", "d"]
        later = T0 + timedelta(hours=1)
        assert await without_reply(repo.commit([Completion("p", "a", "tok", later)])) == [True]
        assert await without_reply(repo.commit([Completion("p", "b", "tok", None)])) == [True]
        assert await without_reply(repo.unlock([Lease("p", "c", "tok")])) == [True]
        assert await without_reply(repo.extend(Lease("p", "d", "tok"), lease_until=later)) is True
        assert await without_reply(repo.register([rec("e")], now=T0, mode=RegisterMode.CREATE)) == [True]
        a, b, c, d = [await repo.get("p", name) for name in "abcd"]
        assert a is not None and a.locked_by is None and a.scheduled_at == later
        assert b is None
        assert c is not None and c.locked_by is None
        assert d is not None and d.locked_until == later
        assert await repo.register([rec("e")], now=T0, mode=RegisterMode.CREATE) == [False]


async def test_claim_returns_what_it_got_when_some_writes_fail(
    repository: DynamoDBRepository, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(client_module, "BACKOFF_BASE", 0.01)
    await repository.register([rec("ok"), rec("broken")], now=T0, mode=RegisterMode.CREATE)
    broken = {"names": {"broken"}}

    def fail_some(params: dict[str, Any], **_: Any) -> Any:
        if any(f'"{name}"'.encode() in params["body"] for name in broken["names"]):
            error = {"Code": "InternalServerError", "Message": "boom"}
            return _FakeHttp(), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 500}}
        return None

    repository.client.meta.events.register_first("before-call.dynamodb.UpdateItem", fail_some)
    assert [r.name for r in await claim(repository)] == ["ok"]
    assert "1 of 2 writes failed" in caplog.text
    broken["names"] = {"broken"}
    with pytest.raises(BackendError, match="InternalServerError"):
        await claim(repository, token="again")


async def test_adaptive_retry_mode(options: dict[str, Any]) -> None:
    async with opened({**options, "dynamodb_retry_mode": "adaptive"}) as repo:
        await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        assert len(await claim(repo)) == 1


async def test_unreachable_endpoint_fails_fast_naming_host_and_port() -> None:
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        async with opened({"dynamodb_endpoint": "http://127.0.0.1:1", "dynamodb_table_name": "pyncette"}):
            pass
    assert time.monotonic() - started < 10
    assert "127.0.0.1:1" in str(info.value)


async def test_blackholed_endpoint_is_bounded_by_the_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listener that never accepts: connections hang in the backlog, like a dropped SYN.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        hogs = [socket.socket() for _ in range(4)]
        for hog in hogs:
            hog.setblocking(False)
            hog.connect_ex(("127.0.0.1", port))
        try:
            started = time.monotonic()
            with pytest.raises(BackendError) as info:
                async with opened({"dynamodb_endpoint": f"http://127.0.0.1:{port}", "dynamodb_connect_timeout": 0.5}):
                    pass
            assert time.monotonic() - started < 5
            assert f"127.0.0.1:{port}" in str(info.value)
        finally:
            for hog in hogs:
                hog.close()


SECRETS = {
    "dynamodb_aws_access_key_id": "AKIDPYNCETTETESTKEYID",
    "dynamodb_aws_secret_access_key": "pyncette-test-secret-access-key",
    "dynamodb_aws_session_token": "pyncette-test-session-token",
}


def everything_shown(exc: BaseException) -> str:
    """What an error can show: its text, its repr and the whole traceback with its causes."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (*SECRETS.values(), *secrets):
        assert secret not in text


async def test_no_secret_in_the_errors_and_logs_of_a_bad_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    closed = _closed_port()
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        async with opened({"dynamodb_endpoint": f"http://127.0.0.1:{closed}", **SECRETS}):
            pass
    assert time.monotonic() - started < 10
    assert f"127.0.0.1:{closed}" in str(info.value)
    assert_no_secret(everything_shown(info.value))
    assert_no_secret(caplog.text)
    for record in caplog.records:
        assert_no_secret(logging.Formatter().format(record))


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://AKIDINURLUSER:url-secret-password@127.0.0.1:1",
        "http://u:url-secret-password@127.0.0.1:1/?token=t0k3nval",
    ],
)
def test_no_secret_in_the_error_for_credentials_in_the_endpoint(endpoint: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.settings({"dynamodb_endpoint": endpoint, **SECRETS})
    assert_no_secret(everything_shown(info.value), "url-secret-password", "AKIDINURLUSER", "t0k3nval")


async def test_explicit_credentials_are_used_and_never_logged(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with opened({**options, **SECRETS}) as repo:
        assert isinstance(repo, DynamoDBRepository)
        credentials = await repo.client._get_credentials().get_frozen_credentials()
        assert credentials.access_key == SECRETS["dynamodb_aws_access_key_id"]
        assert credentials.token == SECRETS["dynamodb_aws_session_token"]
        await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        assert await repo.get("p", "a") is not None
    assert "Sending http request" in caplog.text  # botocore did log the requests, headers included
    assert_no_secret(caplog.text)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_missing_credentials_are_a_configuration_error(
    dynamodb_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigurationError, match="credentials"):
        async with opened({"dynamodb_endpoint": dynamodb_endpoint}):
            pass


async def test_missing_region_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match="dynamodb_region_name"):
        async with opened({}):
            pass


async def _eventually(call: Any) -> Any:
    """The call's result, allowing one BackendError (the failure may surface once before the pool reconnects)."""
    try:
        return await call()
    except BackendError:
        return await call()


async def test_repository_recovers_after_connections_are_killed(
    cutting_proxy: Any, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = cutting_proxy
    monkeypatch.setattr(client_module, "BACKOFF_BASE", 0.01)
    proxied = {**options, "dynamodb_endpoint": f"http://127.0.0.1:{proxy.port}", "dynamodb_max_attempts": 2}
    async with opened(proxied) as repo:
        await repo.register([rec(f"r{i}") for i in range(10)], now=T0, mode=RegisterMode.CREATE)
        # Cut every connection, including idle pooled ones.
        proxy.cut()
        assert await _eventually(lambda: repo.get("p", "r0")) is not None
        # The server goes away entirely: calls fail with BackendError, not a driver exception.
        await proxy.stop()
        with pytest.raises(BackendError) as info:
            await claim(repo)
        assert f"127.0.0.1:{proxy.port}" in str(info.value)
        # Accepted but cut at once, mid-request.
        await proxy.start()
        proxy.reject = True
        with pytest.raises(BackendError):
            await repo.get("p", "r0")
        # Back to normal: the same repository works again.
        proxy.reject = False
        claimed = await _eventually(lambda: claim(repo))
        assert sorted(r.name for r in claimed) == sorted(f"r{i}" for i in range(10))
        assert all(await repo.commit([Completion("p", r.name, "tok", None) for r in claimed]))


async def test_kill_connections_cuts_pooled_connections_and_the_pool_reconnects(
    keepalive_front: str, options: dict[str, Any]
) -> None:
    async with opened({**options, "dynamodb_endpoint": keepalive_front}) as repo:
        await repo.register([rec(f"r{i}") for i in range(10)], now=T0, mode=RegisterMode.CREATE)  # opens several
        assert await repo.kill_connections() >= 2
        assert await repo.kill_connections() == 0  # nothing left open
        assert await repo.get("p", "r0") is not None  # a new connection, silently
        assert await repo.kill_connections() == 1


@pytest.mark.parametrize("attempts", [1, 2])
async def test_kill_connections_cuts_a_request_in_flight(
    cutting_proxy: Any, options: dict[str, Any], attempts: int
) -> None:
    proxy = cutting_proxy
    proxied = {**options, "dynamodb_endpoint": f"http://127.0.0.1:{proxy.port}", "dynamodb_max_attempts": attempts}
    async with opened(proxied) as repo:
        await repo.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
        proxy.holding = True  # the server answers, the answer waits in the proxy: the request is in flight
        pending = asyncio.ensure_future(repo.get("p", "a"))
        deadline = time.monotonic() + 5
        while not proxy.held:
            assert time.monotonic() < deadline, "the request never reached the server"
            await asyncio.sleep(0.01)
        assert await repo.kill_connections() == 1
        proxy.holding = False
        if attempts == 1:
            with pytest.raises(BackendError, match=r"127\.0\.0\.1"):
                await asyncio.wait_for(pending, 5)
        else:  # botocore resends it on a new connection
            assert await asyncio.wait_for(pending, 5) is not None
        assert await repo.get("p", "a") is not None


# --- the state attribute (added after 2.0) -----------------------------------------------------------


async def test_state_attribute_layout_and_cost(repository: DynamoDBRepository, options: dict[str, Any]) -> None:
    """Items written before ``state`` existed have none and read as no state; a commit with a state, or one
    keeping the lease to a time before its expiry, is still one UpdateItem; a state that is not text is damage."""
    await repository.register([rec("old"), rec("new", spec=None)], now=T0, mode=RegisterMode.CREATE)
    assert "state" not in await stored_item(repository, options, "old")
    calls: Counter[str] = Counter()

    def count_call(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    repository.client.meta.events.register("before-call.dynamodb", count_call)
    await claim(repository)
    calls.clear()
    assert await repository.commit(
        [
            Completion("p", "old", "tok", T0 + timedelta(hours=1), state='{"n": 1}'),
            Completion("p", "new", "tok", T0 + timedelta(seconds=5), state='{"n": 2}', release=False),
        ]
    ) == [True, True]
    assert dict(calls) == {"UpdateItem": 2}
    assert (await stored_item(repository, options, "old"))["state"] == {"S": '{"n": 1}'}
    kept = await stored_item(repository, options, "new")
    assert kept["ready_at"] == kept["locked_until"] == {"S": "2030-01-01T12:00:30.000000Z"}
    # UPDATE keeps the stored state: the single PutItem applies only when it would not change it.
    calls.clear()
    assert await repository.register([rec("old", T0)], now=T0, mode=RegisterMode.UPDATE) == [True]
    assert (await stored_item(repository, options, "old"))["state"] == {"S": '{"n": 1}'}
    await repository.client.update_item(
        TableName=repository.table_name,
        Key={"partition_id": {"S": f"{options['dynamodb_partition_prefix']}:p"}, "task_id": {"S": "old"}},
        UpdateExpression="SET #s = :v",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":v": {"N": "1"}},
    )
    damaged = await repository.get("p", "old")
    assert damaged is not None and damaged.state is None and "state" in (damaged.corrupt or "")


async def test_oversized_state_is_refused_up_front(repository: DynamoDBRepository) -> None:
    with pytest.raises(ConfigurationError, match="state of task 'big' is too large"):
        await repository.register([Record("p", "big", None, T0, state="x" * 20_000)], now=T0, mode=RegisterMode.CREATE)
    await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    await claim(repository)
    with pytest.raises(ConfigurationError, match="state of task 'a' is too large"):
        await repository.commit([Completion("p", "a", "tok", T0, state="x" * 20_000)])


# --- pausing (the control plane, added after 2.0) ------------------------------------------------------------


def counting(repo: DynamoDBRepository) -> Counter[str]:
    """A counter of the API calls ``repo`` makes from now on, by operation name."""
    calls: Counter[str] = Counter()

    def count_call(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    repo.client.meta.events.register("before-call.dynamodb", count_call)
    return calls


async def test_pause_layout_and_request_costs(repository: DynamoDBRepository, options: dict[str, Any]) -> None:
    """A pause is one rule item; pausing, listing, claiming a wholly paused parent and resuming it are one
    request each, however many records the parent has."""
    await repository.register([rec(f"r{i}") for i in range(20)], now=T0, mode=RegisterMode.CREATE)
    calls = counting(repository)
    assert await repository.pause(PauseRule("p", "", True, '{"note": "x"}'), now=T0) is None
    assert dict(calls) == {"PutItem": 1}
    key = rule_key(options["dynamodb_partition_prefix"], "p", "", is_prefix=True)
    item = (await repository.client.get_item(TableName=repository.table_name, Key=key, ConsistentRead=True))["Item"]
    assert item["task_id"]["S"].startswith("\x00pause:")
    assert {k: v["S"] for k, v in item.items() if k not in key} == {
        "ready_at": "\x00pause",
        "pause_rule": "*",
        "pause_info": '{"note": "x"}',
    }
    calls.clear()
    assert await claim(repository, now=T0 + timedelta(days=1)) == []
    assert dict(calls) == {"Query": 1}
    calls.clear()
    assert await repository.pauses("p") == [PauseRule("p", "", True, '{"note": "x"}')]
    assert dict(calls) == {"Query": 1}
    for name in ("r0", "r7"):  # nothing was set aside
        assert "ready_at" in await stored_item(repository, options, name)
    calls.clear()
    assert await repository.resume("p", "", prefix=True, now=T0) is True
    assert dict(calls) == {"DeleteItem": 1}
    assert len(await claim(repository)) == 20


async def test_held_records_are_set_aside_once_and_put_back_by_resume(
    repository: DynamoDBRepository, options: dict[str, Any]
) -> None:
    await repository.register([rec(f"a{i}") for i in range(5)] + [rec("b")], now=T0, mode=RegisterMode.CREATE)
    await repository.pause(PauseRule("p", "a", True), now=T0)
    calls = counting(repository)
    assert [r.name for r in await claim(repository)] == ["b"]
    # One Query page, the lease of b, five set-asides and the check of the rules that follows them.
    assert dict(calls) == {"Query": 2, "UpdateItem": 6}
    held = await stored_item(repository, options, "a3")
    assert "ready_at" not in held and held["held_at"] == {"S": format_time(T0)}
    stored = await repository.get("p", "a3")
    assert stored is not None and stored.corrupt is None and stored.scheduled_at == T0
    assert [r.name for r in (await repository.list_page("p", limit=10, continuation=None))[0]] == [
        *(f"a{i}" for i in range(5)),
        "b",
    ]
    calls.clear()
    # Set aside, the held records cost later claims nothing (b comes again: its lease has expired).
    assert [r.name for r in await claim(repository, now=T0 + timedelta(hours=1), token="t2")] == ["b"]
    assert dict(calls) == {"Query": 1, "UpdateItem": 1}
    calls.clear()
    assert await repository.resume("p", "a", prefix=True, now=T0) is True
    assert dict(calls) == {"DeleteItem": 1, "Query": 2, "UpdateItem": 5}
    item = await stored_item(repository, options, "a3")
    assert "held_at" not in item and item["ready_at"] == {"S": format_time(T0)}
    assert sorted(r.name for r in await claim(repository, token="t3")) == [f"a{i}" for i in range(5)]


async def test_claim_pages_past_rules_and_remembers_how_many_there_are(repository: DynamoDBRepository) -> None:
    await repository.register(
        [rec(f"b{i}", T0 - timedelta(seconds=10 - i)) for i in range(5)], now=T0, mode=RegisterMode.CREATE
    )
    await repository.pause(PauseRule("p", "a", True), now=T0)
    limits: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        limits.append(json.loads(params["body"])["Limit"])

    repository.client.meta.events.register("before-call.dynamodb.Query", record)
    assert [r.name for r in await claim(repository, limit=2)] == ["b0", "b1"]
    assert limits == [2, 3]  # the rule took a place on the first page
    limits.clear()
    assert [r.name for r in await claim(repository, limit=2)] == ["b2", "b3"]
    assert limits == [3]  # room made for the rule: one page again


async def test_a_held_record_rewritten_reenters_the_index_and_the_claim_holds_it_again(
    repository: DynamoDBRepository, options: dict[str, Any]
) -> None:
    await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    await repository.pause(PauseRule("p", "a", False), now=T0)
    assert await claim(repository) == []
    assert "ready_at" not in await stored_item(repository, options, "a")
    await repository.register([rec("a", T0 - timedelta(minutes=1))], now=T0, mode=RegisterMode.FORCE)
    assert "ready_at" in await stored_item(repository, options, "a")
    assert await claim(repository) == []
    assert "ready_at" not in await stored_item(repository, options, "a")
    await repository.reschedule("p", "a", expected=T0 - timedelta(minutes=1), scheduled_at=T0, state=None, now=T0)
    # A write to a set-aside record leaves a stale held_at beside the new ready_at: resume keeps the new one.
    item = await stored_item(repository, options, "a")
    assert item["ready_at"] == {"S": format_time(T0)} and "held_at" in item
    assert await repository.resume("p", "a", prefix=False, now=T0)
    item = await stored_item(repository, options, "a")
    assert item["ready_at"] == {"S": format_time(T0)} and "held_at" not in item
    assert [r.name for r in await claim(repository)] == ["a"]


async def test_a_claim_racing_a_resume_puts_back_what_it_set_aside(
    repository: DynamoDBRepository, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume deletes the rule after the claim read it, and looks for set-aside records before the claim
    sets this one aside: the claim, checking the rules again, puts it back."""
    await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE)
    await repository.pause(PauseRule("p", "a", False), now=T0)
    hold = repository._hold

    async def racing(parent: str, item: dict[str, Any]) -> bool:
        assert await repository.resume("p", "a", prefix=False, now=T0)
        return await hold(parent, item)

    monkeypatch.setattr(repository, "_hold", racing)
    assert await claim(repository) == []
    monkeypatch.undo()
    item = await stored_item(repository, options, "a")
    assert "held_at" not in item and item["ready_at"] == {"S": format_time(T0)}
    assert [r.name for r in await claim(repository)] == ["a"]


async def test_a_failed_check_after_setting_aside_is_retried_by_the_next_claim(
    repository: DynamoDBRepository, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await repository.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.CREATE)
    await repository.pause(PauseRule("p", "a", False), now=T0)
    pauses = repository.pauses

    async def failing(parent: str) -> list[PauseRule]:
        raise BackendError("dynamodb pauses failed: simulated")

    monkeypatch.setattr(repository, "pauses", failing)
    assert [r.name for r in await claim(repository)] == ["b"]  # returned, with a warning
    monkeypatch.setattr(repository, "pauses", pauses)
    # Removed behind the claim's back (resume would have put "a" back itself).
    await repository.client.delete_item(
        TableName=repository.table_name, Key=rule_key(options["dynamodb_partition_prefix"], "p", "a", is_prefix=False)
    )
    assert "ready_at" not in await stored_item(repository, options, "a")
    assert await claim(repository) == []  # the check is made again, and puts "a" back
    assert [r.name for r in await claim(repository)] == ["a"]


async def test_rule_keys_are_reserved_and_invisible_as_records(repository: DynamoDBRepository) -> None:
    with pytest.raises(ConfigurationError, match="leading NUL"):
        await repository.register([rec("\x00pause:x")], now=T0, mode=RegisterMode.CREATE)
    await repository.register([rec("\x01"), rec("a")], now=T0, mode=RegisterMode.CREATE)
    await repository.pause(PauseRule("p", "zz", True), now=T0)
    name = rule_key("x", "p", "zz", is_prefix=True)["task_id"]["S"]
    assert await repository.get("p", name) is None
    assert await repository.delete("p", name) is False
    assert not await repository.reschedule("p", name, expected=T0, scheduled_at=T0, state=None, now=T0)
    listed: list[str] = []
    token = None
    for _ in range(10):
        page, token = await repository.list_page("p", limit=1, continuation=token)
        listed.extend(r.name for r in page)
        if token is None:
            break
    assert listed == ["\x01", "a"]
    assert [rule.match for rule in await repository.pauses("p")] == ["zz"]


async def test_parents_skip_rule_only_partitions_and_never_repeat(
    repository: DynamoDBRepository, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "_SCAN_PAGE", 3)  # partitions span scan pages
    expected = {f"p{i}" for i in range(6)}
    for i, parent in enumerate(sorted(expected)):
        await repository.register([rec(f"r{j}", parent=parent) for j in range(i + 1)], now=T0, mode=RegisterMode.CREATE)
    await repository.pause(PauseRule("ghost", "", True), now=T0)  # rules only: not a parent with records
    await repository.pause(PauseRule("p3", "", True), now=T0)
    other_options = {**options, "dynamodb_partition_prefix": unique()}
    async with opened(other_options) as other:
        await other.register([rec("x", parent="elsewhere")], now=T0, mode=RegisterMode.CREATE)
    try:
        for limit in (1, 2, 4, 10):
            seen: list[str] = []
            token = None
            for _ in range(100):
                page, token = await repository.parents(limit=limit, continuation=token)
                assert len(page) <= limit
                seen.extend(page)
                if token is None:
                    break
            assert sorted(seen) == sorted(expected), limit
    finally:
        await backend.purge(backend.settings(other_options))
    with pytest.raises(ConfigurationError):
        await repository.parents(limit=1, continuation="not ours")


async def test_a_store_written_before_the_control_plane_keeps_working(options: dict[str, Any], raw: Any) -> None:
    """No schema change: a table and items as the previous 2.x layout wrote them are used as they are."""
    table = options["dynamodb_table_name"]
    await raw.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **SEED_SCHEMA)
    before = (await raw.describe_table(TableName=table))["Table"]
    partition = {"S": f"{options['dynamodb_partition_prefix']}:p"}
    at, lease = format_time(T0), format_time(T0 + LEASE)
    old_items = [
        {"task_id": {"S": "a1"}, "scheduled_at": {"S": at}, "ready_at": {"S": at}, "spec": {"S": '{"v": 1}'}},
        {"task_id": {"S": "a2"}, "scheduled_at": {"S": at}, "ready_at": {"S": at}, "state": {"S": '{"n": 3}'}},
        {
            "task_id": {"S": "a3"},
            "scheduled_at": {"S": at},
            "ready_at": {"S": lease},
            "locked_until": {"S": lease},
            "locked_by": {"S": "old"},
        },
        {"task_id": {"S": "b"}, "scheduled_at": {"S": at}, "ready_at": {"S": at}},
    ]
    for item in old_items:
        await raw.put_item(TableName=table, Item={"partition_id": partition, **item})
    async with opened(options) as repo:
        assert (await raw.describe_table(TableName=table))["Table"]["LocalSecondaryIndexes"] == before[
            "LocalSecondaryIndexes"
        ]
        a2 = await repo.get("p", "a2")
        assert a2 is not None and a2.corrupt is None and a2.state == '{"n": 3}'
        await repo.pause(PauseRule("p", "a", True), now=T0)
        assert [r.name for r in await claim(repo)] == ["b"]
        later = T0 + timedelta(days=10)
        assert await repo.commit([Completion("p", "b", "tok", later), Completion("p", "a3", "old", T0 + LEASE)]) == [
            True,
            True,
        ]
        assert await claim(repo, now=T0 + timedelta(days=1), token="t2") == []
        assert await repo.resume("p", "a", prefix=True, now=T0)
        records = {r.name: r for r in await claim(repo, now=T0 + timedelta(days=1), token="t3")}
        assert sorted(records) == ["a1", "a2", "a3"]
        assert records["a1"].spec == '{"v": 1}' and records["a2"].state == '{"n": 3}'
        assert records["a3"].scheduled_at == T0 + LEASE
        stored = await repo.get("p", "b")
        assert stored is not None and stored.scheduled_at == later
