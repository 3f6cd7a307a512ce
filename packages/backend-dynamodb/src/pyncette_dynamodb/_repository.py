"""The DynamoDB repository: one item per record, every lease change a conditional write.

Requests per operation (what users pay for):

* ``claim``: one Query page on the ``ready_at`` index, then one conditional
  UpdateItem per record tried, all sent concurrently (see the contention
  control below for which records are tried);
* ``commit``/``unlock``: one conditional UpdateItem or DeleteItem per record, concurrently (a commit
  that keeps the lease, ``release=False``, needs a second write when the next run is after the
  lease expiry: the claimable time is the later of the two, which an update expression cannot compute);
* ``register``: one (conditional) PutItem or UpdateItem per record, concurrently;
  ``UPDATE`` mode needs a second write when the stored time is sooner or the
  record carries an expired lease (``min``/``max`` cannot be written as update expressions).

A lost condition (``ConditionalCheckFailedException``) is ordinary control
flow: someone else changed the record first, and the record is skipped.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from pyncette.abc import Completion, Lease, Record, RegisterMode, Repository
from pyncette.errors import BackendError
from pyncette.redaction import get_logger

from ._client import Client, InvalidRequest
from ._codec import (
    INDEX_NAME,
    READY_AT,
    SORT_KEY,
    Item,
    check_state,
    check_storable,
    decode,
    format_time,
    key,
    new_item,
    partition_id,
    stored_time,
    text,
)

logger = get_logger(__name__)

T = TypeVar("T")

#: How often ``register`` in UPDATE mode re-reads and retries when the record keeps changing under it.
_UPDATE_ROUNDS = 10
#: Contention control for ``claim``. Instances polling one parent all see the same due records; if each
#: tried them all, every collision would be a billed, failed conditional write ((instances - 1) per
#: execution). Each repository keeps a per-parent *spread*: 1 (try the earliest ``limit`` records) until
#: more than ``_TARGET_LOSS`` of a claim's writes lose races, then multiplied by ``_GROW`` per such claim,
#: and by ``_SHRINK`` per claim losing under half that. While it is at least ``_SPREAD_FROM``, a claim
#: fetches ``limit * spread`` candidates and tries a random ``1 / spread`` share of them.
_TARGET_LOSS = 0.3
_GROW = 1.5
_SHRINK = 0.85
_SPREAD_FROM = 1.2
_MAX_SPREAD = 32.0
_MAX_FETCH = 1000


#: The earliest time, for a record that must be claimable at once.
_EARLIEST = "0001-01-01T00:00:00.000000Z"
_TIME_SIZE = str(len(_EARLIEST))
#: The attributes besides the key; a write conditioned on all of them being as seen changes nothing else.
_STATE = ("scheduled_at", "locked_until", "locked_by", READY_AT, "spec", "state")


def _unchanged(item: Item) -> dict[str, Any]:
    """The condition parameters of a write that applies only while ``item`` is stored as it is."""
    clauses, values = [], {}
    for n, attribute in enumerate(_STATE):
        if attribute in item:
            clauses.append(f"#a{n} = :seen{n}")
            values[f":seen{n}"] = item[attribute]
        else:
            clauses.append(f"attribute_not_exists(#a{n})")
    params: dict[str, Any] = {
        "ConditionExpression": " AND ".join(clauses),
        "ExpressionAttributeNames": {f"#a{n}": attribute for n, attribute in enumerate(_STATE)},
    }
    if values:
        params["ExpressionAttributeValues"] = values
    return params


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await everything concurrently, let every call finish, then raise the first failure."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


class DynamoDBRepository(Repository):
    """Task records in one DynamoDB table (see :mod:`pyncette_dynamodb._codec` for the item layout)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._table = client.config.table_name
        self._prefix = client.config.partition_prefix
        self._spread: dict[str, float] = {}

    @property
    def client(self) -> Any:
        """The underlying aiobotocore DynamoDB client, e.g. to register botocore event hooks."""
        return self._client.raw

    @property
    def table_name(self) -> str:
        """The DynamoDB table this repository uses."""
        return self._table

    def _key(self, parent: str, name: str) -> Item:
        return key(self._prefix, parent, name)

    # -- register ---------------------------------------------------------------------------

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        for record in records:
            check_storable(self._prefix, record)
        if mode is RegisterMode.CREATE:
            return await _all(self._create(record) for record in records)
        if mode is RegisterMode.FORCE:
            return await _all(self._force(record) for record in records)
        now_text = format_time(now)
        return await _all(self._update(record, now_text) for record in records)

    async def _create(self, record: Record) -> bool:
        item = new_item(self._prefix, record)
        outcome = await self._client.write(
            "put_item",
            "register",
            TableName=self._table,
            Item=item,
            ConditionExpression="attribute_not_exists(task_id)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        # After a retry, finding exactly our item means an earlier attempt of ours created it.
        return outcome.ok or (outcome.retried and outcome.attributes == item)

    async def _force(self, record: Record) -> bool:
        await self._client.call("put_item", "register", TableName=self._table, Item=new_item(self._prefix, record))
        return True

    async def _update(self, record: Record, now: str) -> bool:
        item = new_item(self._prefix, record)
        wanted = item["scheduled_at"]["S"]
        spec_clause = " REMOVE spec" if record.spec is None else ", spec = :spec"
        put: dict[str, Any] = {"TableName": self._table, "Item": item, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        # One PutItem covers the common cases: a new record, or an unleased one whose new time is not later
        # and whose stored state is the one given (a PutItem replaces the whole item, and UPDATE keeps the
        # stored state: otherwise the UpdateItem below, which leaves the state alone, does it).
        same_state = "attribute_not_exists(#state)" if record.state is None else "#state = :state"
        first_values = {":at": {"S": wanted}, ":string": {"S": "S"}}
        if record.state is not None:
            first_values[":state"] = {"S": record.state}
        outcome = await self._client.write(
            "put_item",
            "register",
            # (attribute_type first: comparing a hand-edited number with a string is refused by some emulators.)
            ConditionExpression="attribute_not_exists(task_id) OR (attribute_not_exists(locked_until) "
            f"AND attribute_type(scheduled_at, :string) AND scheduled_at >= :at AND {same_state})",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=first_values,
            **put,
        )
        for _ in range(_UPDATE_ROUNDS):
            if outcome.ok:
                return True
            old = outcome.attributes
            if old is None:  # deleted since: insert it
                outcome = await self._client.write(
                    "put_item", "register", ConditionExpression="attribute_not_exists(task_id)", **put
                )
                continue
            if decode(record.parent, old).corrupt is not None:
                # A record that cannot be decoded counts as missing: overwrite it, if it is still as we saw it.
                outcome = await self._client.write("put_item", "register", **_unchanged(old), **put)
                continue
            locked_until = text(old, "locked_until")
            if locked_until is not None and locked_until > now:
                return False
            # Keep the sooner time and any (expired) lease; write only if the record is still as we saw it.
            stored = text(old, "scheduled_at") or wanted
            scheduled = min(stored, wanted)
            values: dict[str, Any] = {
                ":at": {"S": scheduled},
                ":ready": {"S": scheduled if locked_until is None else max(scheduled, locked_until)},
                ":seen": {"S": stored},
            }
            if record.spec is not None:
                values[":spec"] = {"S": record.spec}
            if locked_until is None:
                lock_condition = "attribute_not_exists(locked_until)"
            else:
                lock_condition = "locked_until = :seen_lock"
                values[":seen_lock"] = {"S": locked_until}
            outcome = await self._client.write(
                "update_item",
                "register",
                TableName=self._table,
                Key=self._key(record.parent, record.name),
                UpdateExpression="SET scheduled_at = :at, ready_at = :ready" + spec_clause,
                ConditionExpression=f"scheduled_at = :seen AND {lock_condition}",
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        raise BackendError(f"dynamodb register: record {record.name!r} kept changing concurrently; giving up")

    # -- leases -----------------------------------------------------------------------------

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        if limit < 1:
            return []
        spread = self._spread.get(parent, 1.0)
        spreading = spread >= _SPREAD_FROM
        page = await self._client.call(
            "query",
            "claim",
            TableName=self._table,
            IndexName=INDEX_NAME,
            KeyConditionExpression="partition_id = :p AND ready_at <= :now",
            ExpressionAttributeValues={
                ":p": {"S": partition_id(self._prefix, parent)},
                ":now": {"S": format_time(now)},
            },
            ProjectionExpression="task_id, scheduled_at",
            ConsistentRead=True,
            Limit=min(math.ceil(limit * spread), max(limit, _MAX_FETCH)) if spreading else limit,
        )
        candidates: list[Item] = page.get("Items", [])
        if spreading and candidates:
            # Other instances claim this parent too: try only our share, picked at random (in due order),
            # so that instances mostly go for different records instead of all racing for the earliest.
            share = min(limit, math.ceil(len(candidates) / spread))
            candidates = [candidates[i] for i in sorted(random.sample(range(len(candidates)), share))]
        else:
            candidates = candidates[:limit]
        if not candidates:
            return []
        now_text, lease_text = format_time(now), format_time(lease_until)
        results = await asyncio.gather(
            *(self._lease(parent, item, now_text, lease_text, token) for item in candidates), return_exceptions=True
        )
        claimed = [r for r in results if isinstance(r, Record)]
        errors = [r for r in results if isinstance(r, BaseException)]
        self._adapt_spread(parent, spread, lost=results.count(None) / len(candidates))
        if errors:
            if not claimed or any(not isinstance(e, Exception) for e in errors):
                raise errors[0]
            # Those records stay unleased, or leased to nobody until the lease expires.
            logger.warning("dynamodb claim: %d of %d writes failed: %s", len(errors), len(candidates), errors[0])
        return claimed

    def _adapt_spread(self, parent: str, spread: float, *, lost: float) -> None:
        """Widen the spread while too many conditional writes lose races, narrow it back when they stop."""
        if lost > _TARGET_LOSS:
            spread = min(_MAX_SPREAD, spread * _GROW)
        elif lost < _TARGET_LOSS / 2:
            spread = max(1.0, spread * _SHRINK)
        if spread > 1.0:
            self._spread[parent] = spread
        else:
            self._spread.pop(parent, None)

    async def _lease(self, parent: str, item: Item, now: str, lease_until: str, token: str) -> Record | None:
        name = item[SORT_KEY]["S"]
        values = {":now": {"S": now}, ":lease": {"S": lease_until}, ":token": {"S": token}}
        condition = "ready_at <= :now"
        scheduled = stored_time(item, "scheduled_at")
        if lease_until >= now or scheduled is None:
            # (An unreadable scheduled_at: the record comes back corrupt and the runtime parks it.)
            ready = lease_until
        else:
            # A lease that ends before now (odd, but allowed): the record is claimable again at the later time.
            ready = max(scheduled, lease_until)
            condition += " AND scheduled_at = :seen"
            values[":seen"] = {"S": scheduled}
        values[":ready"] = {"S": ready}
        try:
            outcome = await self._client.write(
                "update_item",
                "claim",
                TableName=self._table,
                Key=self._key(parent, name),
                UpdateExpression="SET locked_until = :lease, locked_by = :token, ready_at = :ready",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except InvalidRequest as exc:
            return await self._unindex(parent, name, now, str(exc))
        attributes = outcome.attributes
        if attributes is None:
            return None
        if not outcome.ok and not (
            outcome.retried
            and text(attributes, "locked_by") == token
            and text(attributes, "locked_until") == lease_until
        ):
            return None  # lost the race: someone else leased or changed it first
        # Leased; if it cannot be decoded it comes back with ``corrupt`` set, and the runtime parks it.
        return decode(parent, attributes)

    async def _unindex(self, parent: str, name: str, now: str, reason: str) -> Record | None:
        """Take a due record DynamoDB refuses to lease out of the ``ready_at`` index (which is sparse),
        keeping its data, and return it unleased and marked corrupt; ``None`` if it changed meanwhile."""
        outcome = await self._client.write(
            "update_item",
            "claim",
            TableName=self._table,
            Key=self._key(parent, name),
            UpdateExpression="REMOVE ready_at",
            ConditionExpression="ready_at <= :now",
            ExpressionAttributeValues={":now": {"S": now}},
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if outcome.attributes is None:
            return None
        if not outcome.ok and not (outcome.retried and READY_AT not in outcome.attributes):
            return None
        logger.warning("dynamodb claim: record %r of %r cannot be leased and is set aside: %s", name, parent, reason)
        found = decode(parent, outcome.attributes)
        return replace(found, corrupt=f"cannot be leased: {reason}")

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        return await _all(self._complete(completion) for completion in completions)

    async def _complete(self, completion: Completion) -> bool:
        check_state(completion.name, completion.state)
        common: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(completion.parent, completion.name),
            "ConditionExpression": "locked_by = :token",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if completion.next_at is None:
            outcome = await self._client.write(
                "delete_item", "commit", ExpressionAttributeValues={":token": {"S": completion.token}}, **common
            )
            # Retried and gone: our earlier attempt deleted it.
            return outcome.ok or (outcome.retried and outcome.attributes is None)
        at = format_time(completion.next_at)
        values: dict[str, Any] = {":token": {"S": completion.token}, ":at": {"S": at}}
        set_state = ""
        if completion.state is not None:
            set_state = ", #state = :state"
            values[":state"] = {"S": completion.state}
            common["ExpressionAttributeNames"] = {"#state": "state"}
        if not completion.release:
            return await self._reschedule_keeping_lease(common, values, set_state)
        outcome = await self._client.write(
            "update_item",
            "commit",
            UpdateExpression=f"SET scheduled_at = :at, ready_at = :at{set_state} REMOVE locked_until, locked_by",
            ExpressionAttributeValues=values,
            **common,
        )
        old = outcome.attributes
        return outcome.ok or (
            outcome.retried and old is not None and "locked_by" not in old and text(old, "scheduled_at") == at
        )

    async def _reschedule_keeping_lease(self, common: dict[str, Any], values: dict[str, Any], set_state: str) -> bool:
        """Commit with ``release=False``: the record stays leased, claimable at the later of ``:at`` and
        the lease expiry. Both writes are idempotent (the lease stays ours), so a retried one needs no check."""
        first = await self._client.write(
            "update_item",
            "commit",
            UpdateExpression=f"SET scheduled_at = :at, ready_at = locked_until{set_state}",
            ConditionExpression="locked_by = :token AND attribute_type(locked_until, :string) AND locked_until >= :at",
            ExpressionAttributeValues={**values, ":string": {"S": "S"}},
            **{k: v for k, v in common.items() if k != "ConditionExpression"},
        )
        if first.ok:
            return True
        old = first.attributes
        if old is None or text(old, "locked_by") != values[":token"]["S"] or stored_time(old, "locked_until") is None:
            return False
        second = await self._client.write(
            "update_item",
            "commit",
            UpdateExpression=f"SET scheduled_at = :at, ready_at = :at{set_state}",
            ConditionExpression="locked_by = :token AND locked_until < :at",
            ExpressionAttributeValues=values,
            **{k: v for k, v in common.items() if k != "ConditionExpression"},
        )
        return second.ok

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        return await _all(self._unlock(lease) for lease in leases)

    async def _unlock(self, lease: Lease) -> bool:
        common: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(lease.parent, lease.name),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        outcome = await self._client.write(
            "update_item",
            "unlock",
            UpdateExpression="SET ready_at = scheduled_at REMOVE locked_until, locked_by",
            # Copy scheduled_at into the index only if it looks like a time (a string of the right length).
            ConditionExpression="locked_by = :token AND attribute_type(scheduled_at, :string) "
            "AND size(scheduled_at) = :len",
            ExpressionAttributeValues={":token": {"S": lease.token}, ":string": {"S": "S"}, ":len": {"N": _TIME_SIZE}},
            **common,
        )
        old = outcome.attributes
        if outcome.ok or (outcome.retried and old is not None and "locked_by" not in old):
            return True
        if old is None or text(old, "locked_by") != lease.token:
            return False
        # Ours, but scheduled_at is unreadable: make the record claimable at once, so that a claim
        # returns it as corrupt and the runtime parks it.
        second = await self._client.write(
            "update_item",
            "unlock",
            UpdateExpression="SET ready_at = :earliest REMOVE locked_until, locked_by",
            ConditionExpression="locked_by = :token",
            ExpressionAttributeValues={":token": {"S": lease.token}, ":earliest": {"S": _EARLIEST}},
            **common,
        )
        old = second.attributes
        return second.ok or (second.retried and old is not None and "locked_by" not in old)

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        until = format_time(lease_until)
        common: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(lease.parent, lease.name),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        outcome = await self._client.write(
            "update_item",
            "extend",
            UpdateExpression="SET locked_until = :until, ready_at = :until",
            ConditionExpression="locked_by = :token AND attribute_type(scheduled_at, :string) "
            "AND scheduled_at <= :until",
            ExpressionAttributeValues={":token": {"S": lease.token}, ":until": {"S": until}, ":string": {"S": "S"}},
            **common,
        )
        old = outcome.attributes
        if outcome.ok:
            return True
        if old is None or text(old, "locked_by") != lease.token:
            return False
        if outcome.retried and text(old, "locked_until") == until:
            return True
        # Still ours, but scheduled after the new expiry: the record becomes claimable at its scheduled time
        # (at the new expiry if scheduled_at is unreadable: a claim then returns it as corrupt).
        scheduled = stored_time(old, "scheduled_at")
        values = {":token": {"S": lease.token}, ":until": {"S": until}, ":ready": {"S": max(scheduled or until, until)}}
        if "scheduled_at" in old:
            seen = "scheduled_at = :seen"
            values[":seen"] = old["scheduled_at"]
        else:
            seen = "attribute_not_exists(scheduled_at)"
        second = await self._client.write(
            "update_item",
            "extend",
            UpdateExpression="SET locked_until = :until, ready_at = :ready",
            ConditionExpression=f"locked_by = :token AND {seen}",
            ExpressionAttributeValues=values,
            **common,
        )
        old = second.attributes
        return second.ok or (
            second.retried
            and old is not None
            and text(old, "locked_by") == lease.token
            and text(old, "locked_until") == until
        )

    # -- reads and administration -----------------------------------------------------------

    async def delete(self, parent: str, name: str) -> bool:
        response = await self._client.call(
            "delete_item", "delete", TableName=self._table, Key=self._key(parent, name), ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    async def get(self, parent: str, name: str) -> Record | None:
        response = await self._client.call(
            "get_item", "get", TableName=self._table, Key=self._key(parent, name), ConsistentRead=True
        )
        item: Item | None = response.get("Item")
        return None if item is None else decode(parent, item)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        partition = partition_id(self._prefix, parent)
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "partition_id = :p",
            "ExpressionAttributeValues": {":p": {"S": partition}},
            "ConsistentRead": True,
            "Limit": max(1, limit),
        }
        if continuation is not None:
            params["ExclusiveStartKey"] = self._key(parent, continuation)
        page = await self._client.call("query", "list", **params)
        records = [decode(parent, item) for item in page.get("Items", [])]
        last: Item | None = page.get("LastEvaluatedKey")
        return records, None if last is None else str(last[SORT_KEY]["S"])

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        outcome = await self._client.write(
            "update_item",
            "write_raw_spec",
            TableName=self._table,
            Key=self._key(parent, name),
            UpdateExpression="SET spec = :raw",
            ConditionExpression="attribute_exists(task_id)",
            ExpressionAttributeValues={":raw": {"S": raw}},
        )
        if not outcome.ok:
            raise KeyError(name)

    async def corrupt(self, parent: str, name: str) -> None:
        """Testing hook: garbage in ``scheduled_at``, as a hand edit in the console might leave it."""
        await self._client.write(
            "update_item",
            "corrupt",
            TableName=self._table,
            Key=self._key(parent, name),
            UpdateExpression="SET scheduled_at = :garbage",
            ConditionExpression="attribute_exists(task_id)",
            ExpressionAttributeValues={":garbage": {"S": "garbage"}},
        )

    async def kill_connections(self) -> int:
        """Testing hook: abort this repository's open HTTP connections, idle and in flight; return how many."""
        return self._client.kill_connections()
