"""Creating, checking and purging the table."""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import ClientError

from pyncette.errors import BackendError, ConfigurationError
from pyncette.redaction import get_logger

from ._client import Client, error_code
from ._codec import INDEX_NAME, PARTITION_KEY, READY_AT, SORT_KEY, Item

logger = get_logger(__name__)

#: The schema of the seed documentation, created when the table is missing.
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
    {"AttributeName": SORT_KEY, "AttributeType": "S"},
    {"AttributeName": READY_AT, "AttributeType": "S"},
]
KEY_SCHEMA = [
    {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
    {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
]
INDEX_KEY_SCHEMA = [
    {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
    {"AttributeName": READY_AT, "KeyType": "RANGE"},
]
LOCAL_SECONDARY_INDEXES = [
    {"IndexName": INDEX_NAME, "KeySchema": INDEX_KEY_SCHEMA, "Projection": {"ProjectionType": "ALL"}},
]
BILLING_MODE = "PAY_PER_REQUEST"

#: Waiting for a new table: DynamoDB usually takes seconds; give up after about two minutes.
WAIT_DELAY = 1
WAIT_ATTEMPTS = 120


async def _describe(client: Client) -> dict[str, Any] | None:
    try:
        response = await client.raw.describe_table(TableName=client.config.table_name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    table: dict[str, Any] = response["Table"]
    return table


def _check_schema(table: dict[str, Any], name: str) -> None:
    """Refuse an existing table whose keys or ``ready_at`` index differ from what the repository queries."""
    problems = []
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    for attribute in (PARTITION_KEY, SORT_KEY, READY_AT):
        if types.get(attribute) != "S":
            problems.append(f"attribute {attribute} must be defined with type S")
    if table.get("KeySchema") != KEY_SCHEMA:
        problems.append(f"key schema must be {PARTITION_KEY} HASH, {SORT_KEY} RANGE")
    indexes = {i["IndexName"]: i for i in table.get("LocalSecondaryIndexes") or []}
    index = indexes.get(INDEX_NAME)
    if index is None or index.get("KeySchema") != INDEX_KEY_SCHEMA:
        problems.append(
            f"a local secondary index {INDEX_NAME!r} on ({PARTITION_KEY} HASH, {READY_AT} RANGE) is required"
        )
    if problems:
        raise ConfigurationError(f"DynamoDB table {name!r} has an incompatible schema: {'; '.join(problems)}")


async def ensure_table(client: Client) -> None:
    """Check the table exists with a usable schema, creating it (and waiting until ACTIVE) unless told to skip."""
    config = client.config
    name = config.table_name
    # The first request also resolves credentials and connects: bound it so an unreachable endpoint fails promptly.
    deadline = 2 * config.connect_timeout + 1
    try:
        table = await asyncio.wait_for(_describe(client), timeout=deadline)
    except asyncio.TimeoutError:
        raise BackendError(f"DynamoDB at {client.server} did not answer within {deadline:g}s") from None
    if table is None:
        if config.skip_table_create:
            raise ConfigurationError(
                f"DynamoDB table {name!r} does not exist at {client.server} and dynamodb_skip_table_create=True: "
                "create it (schema in the pyncette-dynamodb README) or let Pyncette create it"
            )
        try:
            await client.raw.create_table(
                TableName=name,
                AttributeDefinitions=ATTRIBUTE_DEFINITIONS,
                KeySchema=KEY_SCHEMA,
                LocalSecondaryIndexes=LOCAL_SECONDARY_INDEXES,
                BillingMode=BILLING_MODE,
            )
            logger.info("Created DynamoDB table %r at %s", name, client.server)
        except ClientError as exc:
            # Another instance created it first: fine, wait for it like for our own.
            if error_code(exc) != "ResourceInUseException":
                raise
    if table is None or table.get("TableStatus") == "CREATING":
        waiter = client.raw.get_waiter("table_exists")
        await waiter.wait(TableName=name, WaiterConfig={"Delay": WAIT_DELAY, "MaxAttempts": WAIT_ATTEMPTS})
        table = await _describe(client)
        if table is None:
            raise BackendError(f"DynamoDB table {name!r} disappeared while waiting for it to become active")
    if table.get("TableStatus") == "DELETING":
        raise BackendError(f"DynamoDB table {name!r} is being deleted")
    _check_schema(table, name)


async def purge(client: Client) -> None:
    """Delete every item under the partition prefix (records and pause rules); then drop the table if it is
    empty and ours to manage."""
    config = client.config
    name = config.table_name
    start: Item | None = None
    try:
        while True:
            params: dict[str, Any] = {
                "TableName": name,
                "ProjectionExpression": "#p, #t",
                "FilterExpression": "begins_with(#p, :prefix)",
                "ExpressionAttributeNames": {"#p": PARTITION_KEY, "#t": SORT_KEY},
                "ExpressionAttributeValues": {":prefix": {"S": f"{config.partition_prefix}:"}},
                "ConsistentRead": True,
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            page = await client.call("scan", "purge scan", **params)
            keys: list[Item] = page.get("Items", [])
            for chunk in range(0, len(keys), 25):
                await _delete_batch(client, keys[chunk : chunk + 25])
            start = page.get("LastEvaluatedKey")
            if start is None:
                break
        if config.skip_table_create:
            return
        rest = await client.call("scan", "purge check", TableName=name, Limit=1, ConsistentRead=True)
        if rest.get("Items") or rest.get("LastEvaluatedKey"):
            return
        await client.call("delete_table", "purge drop table", TableName=name)
    except BackendError as exc:
        if isinstance(exc.__cause__, ClientError) and error_code(exc.__cause__) == "ResourceNotFoundException":
            return
        raise


async def _delete_batch(client: Client, keys: list[Item]) -> None:
    requests: list[dict[str, Any]] = [{"DeleteRequest": {"Key": k}} for k in keys]
    for attempt in range(10):
        response = await client.call(
            "batch_write_item", "purge delete", RequestItems={client.config.table_name: requests}
        )
        requests = response.get("UnprocessedItems", {}).get(client.config.table_name, [])
        if not requests:
            return
        await asyncio.sleep(0.05 * 2**attempt)
    raise BackendError(f"DynamoDB purge of table {client.config.table_name!r}: items left unprocessed")
