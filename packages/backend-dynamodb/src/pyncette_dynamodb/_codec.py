"""How records map to DynamoDB items.

One item per record::

    partition_id  S  "<partition_prefix>:<parent>"   table hash key
    task_id       S  record name                      table range key
    ready_at      S  when the record becomes claimable: max(scheduled_at, locked_until);
                     range key of the local secondary index "ready_at"
    scheduled_at  S
    locked_until  S  only while leased
    locked_by     S  only while leased
    spec          S  only for dynamic instances
    state         S  the runtime's bookkeeping (JSON text, verbatim), only when it has some;
                     items written before it existed have none and read as no state

Times are fixed-width UTC strings (``2030-01-01T12:00:00.000000Z``), so string
order is time order and ``ready_at <= :now`` selects exactly the claimable items.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pyncette.abc import PARKED_AT, Record
from pyncette.errors import ConfigurationError

Item = dict[str, dict[str, Any]]

PARTITION_KEY = "partition_id"
SORT_KEY = "task_id"
READY_AT = "ready_at"
INDEX_NAME = "ready_at"

# DynamoDB's limits: 2048 bytes for a partition key, 1024 for a sort key, 400 KB for an item.
_MAX_PARTITION_BYTES = 2048
_MAX_NAME_BYTES = 1024
_MAX_SPEC_BYTES = 380_000
_MAX_STATE_BYTES = 16_000
_TIME_LENGTH = len("2030-01-01T12:00:00.000000Z")


def format_time(value: datetime) -> str:
    """A fixed-width, lexicographically sortable UTC representation with microseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    elif value.utcoffset():
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: str) -> datetime:
    """The inverse of :func:`format_time`."""
    return datetime.fromisoformat(value.removesuffix("Z")).replace(tzinfo=timezone.utc)


def partition_id(prefix: str, parent: str) -> str:
    """The hash key of ``parent``'s items. The prefix has no colon, so the split is unambiguous."""
    return f"{prefix}:{parent}"


def key(prefix: str, parent: str, name: str) -> Item:
    """The primary key of one record."""
    return {PARTITION_KEY: {"S": partition_id(prefix, parent)}, SORT_KEY: {"S": name}}


def check_storable(prefix: str, record: Record) -> None:
    """Refuse, up front, a record DynamoDB would reject (so the runtime does not retry it forever)."""
    if not record.name or len(record.name.encode()) > _MAX_NAME_BYTES:
        raise ConfigurationError(
            f"task name {record.name[:50]!r} cannot be stored in DynamoDB: 1 to {_MAX_NAME_BYTES} bytes are allowed"
        )
    if len(partition_id(prefix, record.parent).encode()) > _MAX_PARTITION_BYTES:
        raise ConfigurationError(f"task parent {record.parent[:50]!r} is too long for a DynamoDB partition key")
    if record.spec is not None and len(record.spec.encode()) > _MAX_SPEC_BYTES:
        raise ConfigurationError(
            f"spec of task {record.name[:50]!r} is too large for DynamoDB (at most {_MAX_SPEC_BYTES} bytes)"
        )
    check_state(record.name, record.state)


def check_state(name: str, state: str | None) -> None:
    """Refuse, up front, a state that would not fit in an item next to the largest spec."""
    if state is not None and len(state.encode()) > _MAX_STATE_BYTES:
        raise ConfigurationError(
            f"state of task {name[:50]!r} is too large for DynamoDB (at most {_MAX_STATE_BYTES} bytes)"
        )


def new_item(prefix: str, record: Record) -> Item:
    """A fresh, unleased item for ``record``."""
    at = format_time(record.scheduled_at)
    item = key(prefix, record.parent, record.name)
    item["scheduled_at"] = {"S": at}
    item[READY_AT] = {"S": at}
    if record.spec is not None:
        item["spec"] = {"S": record.spec}
    if record.state is not None:
        item["state"] = {"S": record.state}
    return item


def text(item: Item, attribute: str) -> str | None:
    """A string attribute of ``item``; ``None`` when absent or not a string (a hand edit)."""
    value = item.get(attribute)
    found = value.get("S") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def stored_time(item: Item, attribute: str) -> str | None:
    """A time attribute of ``item`` as stored, when it is one :func:`format_time` could have written."""
    value = text(item, attribute)
    if value is None or len(value) != _TIME_LENGTH or not value.endswith("Z"):
        return None
    try:
        parse_time(value)
    except ValueError:
        return None
    return value


def _describe(item: Item, attribute: str) -> str:
    value = item.get(attribute)
    if value is None:
        return "missing"
    if not isinstance(value, dict) or "S" not in value:
        kinds = ", ".join(value) if isinstance(value, dict) else type(value).__name__
        return f"not a string ({kinds})"
    return f"{str(value['S'])[:40]!r} is not a time"


def decode(parent: str, item: Item) -> Record:
    """The record stored in ``item`` (a full item, as returned by GetItem, Query or ReturnValues).

    A record that cannot be decoded (garbage in a time field, a wrong attribute type) is returned
    with ``corrupt`` set to the reason and what could be read: an unreadable ``scheduled_at``
    becomes :data:`~pyncette.abc.PARKED_AT`, an unreadable lease ``None``.
    """
    problems = []
    scheduled_at, locked_until = stored_time(item, "scheduled_at"), stored_time(item, "locked_until")
    if scheduled_at is None:
        problems.append(f"scheduled_at {_describe(item, 'scheduled_at')}")
    if locked_until is None and "locked_until" in item:
        problems.append(f"locked_until {_describe(item, 'locked_until')}")
    if stored_time(item, READY_AT) is None:
        # Not (or wrongly) in the ready_at index: no claim would ever find it.
        problems.append(f"ready_at {_describe(item, READY_AT)}")
    spec, locked_by, state = text(item, "spec"), text(item, "locked_by"), text(item, "state")
    for attribute, value in (("spec", spec), ("locked_by", locked_by), ("state", state)):
        if value is None and attribute in item:
            problems.append(f"{attribute} {_describe(item, attribute)}")
    return Record(
        parent=parent,
        name=str(item[SORT_KEY]["S"]),
        spec=spec,
        scheduled_at=PARKED_AT if scheduled_at is None else parse_time(scheduled_at),
        locked_until=None if locked_until is None else parse_time(locked_until),
        locked_by=locked_by,
        corrupt="; ".join(problems) or None,
        state=state,
    )
