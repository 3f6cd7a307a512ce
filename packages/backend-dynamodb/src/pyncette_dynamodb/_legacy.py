"""Reading and setting aside the items Pyncette 1.x kept in DynamoDB, for ``pyncette migrate --from-1x``.

1.x used the same table schema as 2.x (hash ``partition_id``, range ``task_id``, local index ``ready_at``),
with ``partition_id = "<prefix, ':' doubled>:<parent>"`` and ``task_id`` the record's canonical name. Its items
are told from 2.x items by their shape: a number ``version`` and a string ``execute_after`` (2.x items have
``scheduled_at`` and no ``version``). 1.x's default prefix was empty, which 2.x cannot express; so the default
``dynamodb_partition_prefix`` (``pyncette``) reads the 1.x items of both the empty and the ``pyncette`` prefix.

A table cannot be renamed, and 1.x items left in place would be claimed (as unreadable) by 2.x: setting aside
copies them, unchanged, into the backup table ``<table>_1x_backup`` (same keys, created on demand) and then
deletes the originals, one page at a time, copy first. When every page is done, a marker item records it. A
run interrupted half-way leaves every item in at least one of the tables and no marker: the store then still
counts as live, and the next run copies (again) and deletes what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from pyncette.abc import LegacyRow, LegacyStore
from pyncette.errors import BackendError, ConfigurationError

from ._client import Client, error_code
from ._codec import PARTITION_KEY, SORT_KEY, Item, text
from ._options import DEFAULT_PARTITION_PREFIX
from ._table import BILLING_MODE, KEY_SCHEMA, WAIT_ATTEMPTS, WAIT_DELAY

BACKUP_SUFFIX = "_1x_backup"
#: The partition of the marker items in the backup table (one per prefix set aside); no 1.x prefix starts so.
MARKER_PARTITION = "#pyncette-migrate"
_MAX_TABLE_NAME = 255
_SCAN_LIMIT = 500
_WRITE_BATCH = 25


def _time(item: Item, attribute: str) -> datetime | None:
    """A 1.x time attribute (``isoformat()`` of an aware UTC time; ``""`` or NULL when unset) as aware UTC."""
    value = text(item, attribute)
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


class DynamoDBLegacyStore(LegacyStore):
    """The 1.x items of one partition prefix (two for the default prefix) in one table."""

    def __init__(self, client: Client) -> None:
        self._client = client
        config = client.config
        self._table = config.table_name
        self._backup = config.table_name + BACKUP_SUFFIX
        if len(self._backup) > _MAX_TABLE_NAME:
            raise ConfigurationError(
                f"dynamodb_table_name {config.table_name!r} is too long to migrate from 1.x: the backup table "
                f"'<name>{BACKUP_SUFFIX}' must fit in {_MAX_TABLE_NAME} characters"
            )
        self._prefix = config.partition_prefix
        prefixes = [config.partition_prefix]
        if config.partition_prefix == DEFAULT_PARTITION_PREFIX:
            prefixes.insert(0, "")
        self._starts = [prefix.replace(":", "::") + ":" for prefix in prefixes]

    async def describe(self) -> str:
        shown = " and ".join(repr(start[:-1]) for start in self._starts)
        return f"DynamoDB table {self._table!r}, partition prefix {shown}, at {self._client.server}"

    def _filter(self, *, legacy_shape: bool) -> dict[str, Any]:
        """Scan parameters selecting the items of our prefixes (of 1.x's shape, in the original table)."""
        starts = " OR ".join(f"begins_with(#p, :s{i})" for i in range(len(self._starts)))
        expression = f"({starts})"
        names = {"#p": PARTITION_KEY}
        if legacy_shape:
            expression += " AND attribute_exists(#v) AND attribute_exists(#e) AND attribute_not_exists(#s)"
            names.update({"#v": "version", "#e": "execute_after", "#s": "scheduled_at"})
        return {
            "FilterExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {f":s{i}": {"S": start} for i, start in enumerate(self._starts)},
            "ConsistentRead": True,
        }

    async def _pages(self, table: str, *, legacy_shape: bool, limit: int | None = None) -> AsyncIterator[list[Item]]:
        """The selected items of ``table``, a scan page at a time (none when the table does not exist)."""
        start: Item | None = None
        while True:
            params = {"TableName": table, "Limit": limit or _SCAN_LIMIT, **self._filter(legacy_shape=legacy_shape)}
            if start is not None:
                params["ExclusiveStartKey"] = start
            try:
                page = await self._client.call("scan", f"1.x scan of {table!r}", **params)
            except BackendError as exc:
                if error_code(exc.__cause__) == "ResourceNotFoundException":
                    return
                raise
            items: list[Item] = page.get("Items", [])
            if items:
                yield items
            start = page.get("LastEvaluatedKey")
            if start is None:
                return

    async def _any(self, table: str, *, legacy_shape: bool) -> bool:
        async for _ in self._pages(table, legacy_shape=legacy_shape):
            return True
        return False

    def _marker_key(self) -> Item:
        return {PARTITION_KEY: {"S": MARKER_PARTITION}, SORT_KEY: {"S": self._prefix}}

    async def _marked(self) -> bool:
        try:
            found = await self._client.call(
                "get_item", "1.x marker read", TableName=self._backup, Key=self._marker_key(), ConsistentRead=True
            )
        except BackendError as exc:
            if error_code(exc.__cause__) == "ResourceNotFoundException":
                return False
            raise
        return "Item" in found

    async def has_live_data(self) -> bool:
        if await self._any(self._table, legacy_shape=True):
            return True
        # Copied items without the marker: an interrupted set-aside, still to be completed.
        return not await self._marked() and await self._any(self._backup, legacy_shape=False)

    async def has_backup(self) -> bool:
        return await self._marked()

    async def live_leases(self, now: datetime) -> int:
        count = 0
        async for items in self._pages(self._table, legacy_shape=True):
            count += sum(1 for item in items if (until := _time(item, "locked_until")) is not None and until > now)
        return count

    async def set_aside(self) -> None:
        await self._ensure_backup_table()
        async for items in self._pages(self._table, legacy_shape=True):
            await self._write(self._backup, [{"PutRequest": {"Item": item}} for item in items])
            keys = [{PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]} for item in items]
            await self._write(self._table, [{"DeleteRequest": {"Key": key}} for key in keys])
        marker = {**self._marker_key(), "set_aside_at": {"S": datetime.now(timezone.utc).isoformat()}}
        await self._client.call("put_item", "1.x marker write", TableName=self._backup, Item=marker)

    async def _ensure_backup_table(self) -> None:
        try:
            await self._client.call(
                "create_table",
                "1.x backup table creation",
                TableName=self._backup,
                AttributeDefinitions=[
                    {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
                    {"AttributeName": SORT_KEY, "AttributeType": "S"},
                ],
                KeySchema=KEY_SCHEMA,
                BillingMode=BILLING_MODE,
            )
        except BackendError as exc:
            if error_code(exc.__cause__) != "ResourceInUseException":  # it exists already (an earlier run)
                raise
        waiter = self._client.raw.get_waiter("table_exists")
        try:
            await waiter.wait(TableName=self._backup, WaiterConfig={"Delay": WAIT_DELAY, "MaxAttempts": WAIT_ATTEMPTS})
        except Exception as exc:
            raise BackendError(f"DynamoDB backup table {self._backup!r} did not become active: {exc}") from exc

    async def _write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, sending unprocessed items again with backoff."""
        for chunk in range(0, len(requests), _WRITE_BATCH):
            pending = requests[chunk : chunk + _WRITE_BATCH]
            for attempt in range(10):
                response = await self._client.call(
                    "batch_write_item", f"1.x batch write to {table!r}", RequestItems={table: pending}
                )
                pending = response.get("UnprocessedItems", {}).get(table, [])
                if not pending:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise BackendError(f"DynamoDB 1.x migration: writes to table {table!r} left unprocessed")

    async def rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        async for items in self._pages(self._backup, legacy_shape=False, limit=batch):
            rows = [row for row in map(self._row, items) if row is not None]
            if rows:
                yield rows

    async def live_rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        """The 1.x items in the table, and those an interrupted set-aside already copied (read once each)."""
        copied: set[tuple[str | None, str | None]] = set()  # empty unless a set-aside was interrupted
        if not await self._marked():
            async for items in self._pages(self._backup, legacy_shape=False, limit=batch):
                copied.update((text(item, PARTITION_KEY), text(item, SORT_KEY)) for item in items)
                rows = [row for row in map(self._row, items) if row is not None]
                if rows:
                    yield rows
        async for items in self._pages(self._table, legacy_shape=True, limit=batch):
            fresh = [item for item in items if (text(item, PARTITION_KEY), text(item, SORT_KEY)) not in copied]
            rows = [row for row in map(self._row, fresh) if row is not None]
            if rows:
                yield rows

    def _row(self, item: Item) -> LegacyRow | None:
        partition, name = text(item, PARTITION_KEY), text(item, SORT_KEY)
        if partition is None or name is None:
            return None
        start = next((s for s in self._starts if partition.startswith(s)), None)
        if start is None:
            return None
        spec = text(item, "task_spec")
        parent = partition[len(start) :]
        # A static task's partition is its own name; an instance's is its template's (or partition's).
        static = spec is None and parent == name
        return LegacyRow(
            name=name,
            parent=None if static else parent,
            spec=spec,
            execute_after=_time(item, "execute_after"),
            locked_until=_time(item, "locked_until"),
            locked_by=text(item, "locked_by") or None,
        )

    async def drop_backup(self) -> None:
        async for items in self._pages(self._backup, legacy_shape=False):
            keys = [{PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]} for item in items]
            await self._write(self._backup, [{"DeleteRequest": {"Key": key}} for key in keys])
        await self._client.call("delete_item", "1.x marker delete", TableName=self._backup, Key=self._marker_key())
        # The backup table may still hold the backup of another prefix: drop it only when empty.
        rest = await self._client.call("scan", "1.x backup check", TableName=self._backup, Limit=1, ConsistentRead=True)
        if not rest.get("Items") and not rest.get("LastEvaluatedKey"):
            try:
                await self._client.call("delete_table", "1.x backup table drop", TableName=self._backup)
            except BackendError as exc:
                if error_code(exc.__cause__) != "ResourceNotFoundException":
                    raise
