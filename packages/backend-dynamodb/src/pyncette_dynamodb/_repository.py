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

Pausing. DynamoDB has no multi-item update and a local index cannot be added to
an existing table, so a pause is a *rule item* in the parent's partition (layout
in :mod:`pyncette_dynamodb._codec`) whose ``ready_at`` sorts before every time:
the claim's Query page returns the parent's rules before its due records, in the
same request.

* ``pause``: one PutItem. ``resume`` of a whole parent: one DeleteItem.
* ``claim``: a whole-parent rule makes it return nothing (no write). A record a
  prefix or name rule matches is not leased but *set aside*: one conditional
  UpdateItem moves its ``ready_at`` to ``held_at``, out of the sparse index, so
  later claims no longer read it. A claim that set records aside then reads the
  rules again (one Query): a ``resume`` racing with it may have missed them, and
  those no rule holds any more are put back. Until a claim meets them, held
  records cost the claims that page past them (at most once each).
* ``resume`` of a prefix or name: the DeleteItem, then (concurrently) a Query of
  the remaining rules and a Query of the matching key range, paged by 1 MB
  (every matching record is read, and billed, once; the set-aside ones are
  returned), then one conditional UpdateItem per set-aside record that no
  remaining rule holds, all concurrently, putting ``ready_at`` back. Records
  no claim has set aside (paused and resumed before they fell due) cost nothing.
* ``register``, ``commit``, ``unlock``, ``extend`` and ``reschedule`` of a held
  record write ``ready_at`` as ever (no extra cost, nothing read first): the
  record re-enters the index and the next claim that finds it due sets it aside
  again (a stale ``held_at`` beside a ``ready_at`` is ignored, and dropped when
  the record is put back or set aside).
* ``pauses``: one Query of the rule sort keys. ``parents``: Scan pages of the
  table's keys under the prefix.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from pyncette.abc import Completion, Lease, PauseRule, Record, RegisterMode, Repository
from pyncette.errors import BackendError, ConfigurationError
from pyncette.redaction import get_logger

from ._client import Client, InvalidRequest
from ._codec import (
    FIRST_NAME,
    HELD_AT,
    INDEX_NAME,
    PARTITION_KEY,
    READY_AT,
    RESERVED,
    RULE,
    RULE_INFO,
    RULE_KEY,
    SORT_KEY,
    Item,
    check_state,
    check_storable,
    decode,
    decode_rule,
    fits,
    format_time,
    is_rule,
    key,
    new_item,
    partition_id,
    rule_item,
    rule_key,
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
#: The largest follow-up page a claim reads past pause rules and held records.
_MAX_PAGE = 1000
#: Records per page of the Scan behind ``parents``.
_SCAN_PAGE = 500


#: The earliest time, for a record that must be claimable at once.
_EARLIEST = "0001-01-01T00:00:00.000000Z"
_TIME_SIZE = str(len(_EARLIEST))
#: The attributes besides the key; a write conditioned on all of them being as seen changes nothing else.
_STATE = ("scheduled_at", "locked_until", "locked_by", READY_AT, HELD_AT, "spec", "state")


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


def _write_continuation(start: Item | None, last: str | None) -> str:
    assert start is not None
    return json.dumps([start[PARTITION_KEY]["S"], start[SORT_KEY]["S"], last])


def _read_continuation(continuation: str) -> tuple[Item, str | None]:
    try:
        partition, name, last = json.loads(continuation)
        if not isinstance(partition, str) or not isinstance(name, str) or not isinstance(last, (str, type(None))):
            raise TypeError
    except (ValueError, TypeError):
        raise ConfigurationError("dynamodb parents: not a continuation this backend returned") from None
    return {PARTITION_KEY: {"S": partition}, SORT_KEY: {"S": name}}, last


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
        #: Per parent, how many rule items the last claim read: the next one's first page makes room for them.
        self._rule_hint: dict[str, int] = {}
        #: Per parent, records this repository set aside and has yet to check against the rules (see _recheck).
        self._recheck_due: dict[str, set[str]] = {}

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
        fetch = min(math.ceil(limit * spread), max(limit, _MAX_FETCH)) if spreading else limit
        now_text = format_time(now)
        due = await self._due(parent, now_text, fetch)
        if due is None:
            return []  # a pause holds the whole parent
        candidates, held = due
        if spreading and candidates:
            # Other instances claim this parent too: try only our share, picked at random (in due order),
            # so that instances mostly go for different records instead of all racing for the earliest.
            share = min(limit, math.ceil(len(candidates) / spread))
            candidates = [candidates[i] for i in sorted(random.sample(range(len(candidates)), share))]
        else:
            candidates = candidates[:limit]
        if not candidates and not held and parent not in self._recheck_due:
            return []
        lease_text = format_time(lease_until)
        results = await asyncio.gather(
            *(self._lease(parent, item, now_text, lease_text, token) for item in candidates),
            *(self._hold(parent, item) for item in held),
            return_exceptions=True,
        )
        leases, holds = results[: len(candidates)], results[len(candidates) :]
        errors = [r for r in results if isinstance(r, BaseException)]
        claimed = [r for r in leases if isinstance(r, Record)]
        set_aside = [item[SORT_KEY]["S"] for item, h in zip(held, holds, strict=True) if h is True]
        if set_aside or parent in self._recheck_due:
            try:
                await self._recheck(parent, set_aside)
            except Exception as exc:  # retried by the next claim of the parent
                errors.append(exc)
        if candidates:
            self._adapt_spread(parent, spread, lost=leases.count(None) / len(candidates))
        if errors:
            if not claimed or any(not isinstance(e, Exception) for e in errors):
                raise errors[0]
            # Those records stay unleased, or leased to nobody until the lease expires.
            logger.warning("dynamodb claim: %d of %d writes failed: %s", len(errors), len(results), errors[0])
        return claimed

    async def _due(self, parent: str, now: str, fetch: int) -> tuple[list[Item], list[Item]] | None:
        """The due records of ``parent`` from the ``ready_at`` index, as (claimable, held by a pause); ``None``
        when a pause holds the whole parent.

        Rule items sort before every record in the index, so the first page brings the parent's rules (its
        ``Limit`` allows for as many as the last claim saw). Without rules this is the single Query page of
        old; with them, further pages are read (each up to twice the size of the last) until ``fetch``
        claimable records are found or the due range ends: the held records met on the way are set aside by
        the claim, so each costs this extra reading once.
        """
        rules: list[PauseRule] = []
        rule_items = 0
        candidates: list[Item] = []
        held: list[Item] = []
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": INDEX_NAME,
            "KeyConditionExpression": "partition_id = :p AND ready_at <= :now",
            "ExpressionAttributeValues": {":p": {"S": partition_id(self._prefix, parent)}, ":now": {"S": now}},
            "ProjectionExpression": f"task_id, scheduled_at, {READY_AT}, {RULE}",
            "ConsistentRead": True,
            "Limit": fetch + self._rule_hint.get(parent, 0),
        }
        try:
            while True:
                page = await self._client.call("query", "claim", **params)
                items: list[Item] = page.get("Items", [])
                records = []
                for item in items:
                    if not is_rule(item):
                        records.append(item)
                        continue
                    rule_items += 1
                    rule = decode_rule(parent, item)
                    if rule is not None and rule.prefix and not rule.match:
                        return None
                    if rule is not None:
                        rules.append(rule)
                for item in records:
                    name = item[SORT_KEY]["S"]
                    (held if any(rule.matches(name) for rule in rules) else candidates).append(item)
                start: Item | None = page.get("LastEvaluatedKey")
                if start is None or not rule_items or len(candidates) >= fetch:
                    return candidates[:fetch], held
                params["ExclusiveStartKey"] = start
                # Expect as many rules and held records again as this page had (so the size at least doubles).
                params["Limit"] = min(_MAX_PAGE, fetch - len(candidates) + len(items))
        finally:
            if rule_items:
                self._rule_hint[parent] = rule_items
            else:
                self._rule_hint.pop(parent, None)

    async def _hold(self, parent: str, item: Item) -> bool:
        """Set aside a due record a pause holds: move its ``ready_at`` to ``held_at``, out of the (sparse) index,
        so that later claims no longer read it. ``True`` when this write did it."""
        try:
            outcome = await self._client.write(
                "update_item",
                "claim",
                TableName=self._table,
                Key=self._key(parent, item[SORT_KEY]["S"]),
                UpdateExpression=f"SET {HELD_AT} = {READY_AT} REMOVE {READY_AT}",
                ConditionExpression=f"{READY_AT} = :seen",
                ExpressionAttributeValues={":seen": item[READY_AT]},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except InvalidRequest:
            return False  # an item DynamoDB refuses to update: it stays in the index, held by the rule
        old = outcome.attributes
        # Retried and found set aside: our earlier attempt may have done it (putting it back twice is harmless).
        return outcome.ok or (outcome.retried and old is not None and READY_AT not in old and HELD_AT in old)

    async def _recheck(self, parent: str, names: list[str]) -> None:
        """Put back into the index the set-aside ``names`` that no rule (but a whole-parent one) holds any more.

        A resume may have removed the rule after our Query read it, and looked for set-aside records before we
        set these aside. Until this succeeds, the names are kept and the next claim of the parent tries again.
        """
        pending = self._recheck_due.setdefault(parent, set())
        pending.update(names)
        rules = [rule for rule in await self.pauses(parent) if rule.match or not rule.prefix]
        orphans = [name for name in pending if not any(rule.matches(name) for rule in rules)]
        if orphans:
            await self._reindex(parent, orphans)
        del self._recheck_due[parent]

    async def _reindex(self, parent: str, names: list[str]) -> None:
        """Put set-aside records back into the index: ``ready_at`` from ``held_at`` (unless a write has set a new
        ``ready_at`` since), one conditional UpdateItem each, all sent concurrently. (TransactWriteItems would
        take 100 per request but costs twice the write units and fails as a whole on any conflict.)"""
        await _all(
            self._client.write(
                "update_item",
                "resume",
                TableName=self._table,
                Key=self._key(parent, name),
                UpdateExpression=f"SET {READY_AT} = if_not_exists({READY_AT}, {HELD_AT}) REMOVE {HELD_AT}",
                ConditionExpression=f"attribute_exists({HELD_AT})",  # (else put back already, or deleted)
            )
            for name in names
        )

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
        if name.startswith(RESERVED):
            return False  # a rule's sort key, never a record's
        response = await self._client.call(
            "delete_item", "delete", TableName=self._table, Key=self._key(parent, name), ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    async def get(self, parent: str, name: str) -> Record | None:
        if name.startswith(RESERVED):
            return None
        response = await self._client.call(
            "get_item", "get", TableName=self._table, Key=self._key(parent, name), ConsistentRead=True
        )
        item: Item | None = response.get("Item")
        return None if item is None else decode(parent, item)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        partition = partition_id(self._prefix, parent)
        params: dict[str, Any] = {
            "TableName": self._table,
            # (Rule items sort before every record: the key condition leaves them out.)
            "KeyConditionExpression": "partition_id = :p AND task_id >= :first",
            "ExpressionAttributeValues": {":p": {"S": partition}, ":first": {"S": FIRST_NAME}},
            "ConsistentRead": True,
            "Limit": max(1, limit),
        }
        if continuation is not None:
            params["ExclusiveStartKey"] = self._key(parent, continuation)
        page = await self._client.call("query", "list", **params)
        records = [decode(parent, item) for item in page.get("Items", [])]
        last: Item | None = page.get("LastEvaluatedKey")
        return records, None if last is None else str(last[SORT_KEY]["S"])

    # -- the control plane ------------------------------------------------------------------

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        """One PutItem of the rule item; the records it matches are held from the next claim on. ``None``: the
        count would cost a Query of every matching record."""
        await self._client.call("put_item", "pause", TableName=self._table, Item=rule_item(self._prefix, rule))
        return None

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        """One DeleteItem of the rule item: enough for a whole-parent rule (claims never set records aside for
        it). For a prefix or a name, then a Query for the remaining rules and a Query of the matching key range
        (every matching record is read, the set-aside ones returned), concurrently, and one conditional
        UpdateItem per set-aside record no remaining rule holds (concurrently), to put it back into the index."""
        if not fits(self._prefix, parent):
            return False  # no rule can be stored there
        response = await self._client.call(
            "delete_item",
            "resume",
            TableName=self._table,
            Key=rule_key(self._prefix, parent, match, is_prefix=prefix),
            ReturnValues="ALL_OLD",
        )
        if "Attributes" not in response:
            return False
        if prefix and not match:
            return True
        # Both after the delete: a claim that set a record aside before it is seen here, one after it sees the
        # rule gone (see _recheck).
        rules, names = await asyncio.gather(self.pauses(parent), self._set_aside(parent, match, prefix=prefix))
        remaining = [rule for rule in rules if rule.match or not rule.prefix]
        await self._reindex(parent, [name for name in names if not any(rule.matches(name) for rule in remaining)])
        return True

    async def _set_aside(self, parent: str, match: str, *, prefix: bool) -> list[str]:
        """The names of ``parent``'s set-aside records that ``match`` matches (a Query of the key range)."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "partition_id = :p AND "
            + ("begins_with(task_id, :m)" if prefix else "task_id = :m"),
            "FilterExpression": f"attribute_exists({HELD_AT})",
            "ProjectionExpression": "task_id",
            "ExpressionAttributeValues": {":p": {"S": partition_id(self._prefix, parent)}, ":m": {"S": match}},
            "ConsistentRead": True,
        }
        names: list[str] = []
        while True:
            page = await self._client.call("query", "resume", **params)
            names.extend(str(item[SORT_KEY]["S"]) for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if start is None:
                return names
            params["ExclusiveStartKey"] = start

    async def pauses(self, parent: str) -> list[PauseRule]:
        if not fits(self._prefix, parent):
            return []
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "partition_id = :p AND begins_with(task_id, :rules)",
            "ExpressionAttributeValues": {
                ":p": {"S": partition_id(self._prefix, parent)},
                ":rules": {"S": RULE_KEY},
            },
            "ProjectionExpression": f"task_id, {RULE}, {RULE_INFO}",
            "ConsistentRead": True,
        }
        rules: list[PauseRule] = []
        while True:  # one page unless the rules exceed 1 MB
            page = await self._client.call("query", "pauses", **params)
            for item in page.get("Items", []):
                rule = decode_rule(parent, item)
                if rule is not None:
                    rules.append(rule)
            start = page.get("LastEvaluatedKey")
            if start is None:
                return rules
            params["ExclusiveStartKey"] = start

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        """One conditional UpdateItem; a second when the record carries an expired lease (``ready_at`` is then
        the later of the new time and the lease's end, which an update expression cannot compute). A record a
        claim had set aside for a pause comes back into the index, and the next claim that finds it due sets it
        aside again."""
        if name.startswith(RESERVED):
            return False
        check_state(name, state)
        at, seen, now_text = format_time(scheduled_at), format_time(expected), format_time(now)
        values: dict[str, Any] = {":at": {"S": at}, ":seen": {"S": seen}}
        set_state = ""
        params: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(parent, name),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if state is not None:
            set_state = ", #state = :state"
            values[":state"] = {"S": state}
            params["ExpressionAttributeNames"] = {"#state": "state"}
        outcome = await self._client.write(
            "update_item",
            "reschedule",
            UpdateExpression=f"SET scheduled_at = :at, ready_at = :at{set_state}",
            ConditionExpression="scheduled_at = :seen AND attribute_not_exists(locked_until)",
            ExpressionAttributeValues=values,
            **params,
        )
        for _ in range(_UPDATE_ROUNDS):
            if outcome.ok:
                return True
            old = outcome.attributes
            if old is None:
                return False
            if outcome.retried and text(old, "scheduled_at") == at and (state is None or text(old, "state") == state):
                return True  # an earlier attempt of ours was applied (when at == seen it would have passed anyway)
            if text(old, "scheduled_at") != seen or "locked_until" not in old:
                return False
            lock = stored_time(old, "locked_until")
            if lock is None or lock > now_text:
                return False  # leased (an unreadable lease counts as one)
            outcome = await self._client.write(
                "update_item",
                "reschedule",
                UpdateExpression=f"SET scheduled_at = :at, ready_at = :ready{set_state}",
                ConditionExpression="scheduled_at = :seen AND locked_until = :lock",
                ExpressionAttributeValues={**values, ":ready": {"S": max(at, lock)}, ":lock": {"S": lock}},
                **params,
            )
        raise BackendError(f"dynamodb reschedule: record {name!r} kept changing concurrently; giving up")

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        """Scan pages of the table's keys (those of this prefix, rule items left out by the filter), in the
        table's order, which keeps a partition's items together: a page never repeats the parent the last one
        ended with. ``continuation`` is that parent and the key to scan on from, as JSON."""
        limit = max(1, limit)
        start: Item | None = None
        last: str | None = None
        if continuation is not None:
            start, last = _read_continuation(continuation)
        head = f"{self._prefix}:"
        params: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": "#p, #t",
            "FilterExpression": "begins_with(#p, :head) AND #t >= :first",
            "ExpressionAttributeNames": {"#p": PARTITION_KEY, "#t": SORT_KEY},
            "ExpressionAttributeValues": {":head": {"S": head}, ":first": {"S": FIRST_NAME}},
            "ConsistentRead": True,
            "Limit": max(limit, _SCAN_PAGE),
        }
        found: list[str] = []
        while True:
            if start is not None:
                params["ExclusiveStartKey"] = start
            page = await self._client.call("scan", "parents", **params)
            for item in page.get("Items", []):
                parent = str(item[PARTITION_KEY]["S"])[len(head) :]
                if parent == last:
                    start = {PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]}
                    continue
                if len(found) == limit:
                    return found, _write_continuation(start, last)
                found.append(parent)
                last = parent
                start = {PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]}
            start = page.get("LastEvaluatedKey")
            if start is None:
                return found, None
            if len(found) == limit:
                return found, _write_continuation(start, last)

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
