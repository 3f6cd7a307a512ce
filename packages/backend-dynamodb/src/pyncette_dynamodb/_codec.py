"""How records and pause rules map to DynamoDB items.

One item per record::

    partition_id  S  "<partition_prefix>:<parent>"   table hash key
    task_id       S  record name                      table range key
    ready_at      S  when the record becomes claimable: max(scheduled_at, locked_until);
                     range key of the local secondary index "ready_at"
    held_at       S  instead of ready_at while a pause holds the record and a claim has set it
                     aside (the index is sparse: the record is then out of it); see _repository
    scheduled_at  S
    locked_until  S  only while leased
    locked_by     S  only while leased
    spec          S  only for dynamic instances
    state         S  the runtime's bookkeeping (JSON text, verbatim), only when it has some;
                     items written before it existed have none and read as no state

One item per pause rule, in the partition of the parent it holds::

    partition_id  S  "<partition_prefix>:<parent>"
    task_id       S  "\\x00pause:" + SHA-256 (hex) of the rule's kind and match
    ready_at      S  "\\x00pause": before every time, so a claim's index Query returns rules first
    pause_rule    S  "*" + prefix, or "=" + exact name
    pause_info    S  the rule's info (JSON text, verbatim), only when it has some

Record names starting with NUL are refused (the runtime never makes them: instance names
cannot contain NUL), so no record can take a rule's sort key and every record sorts at or
after ``"\\x01"``. Times are fixed-width UTC strings (``2030-01-01T12:00:00.000000Z``), so
string order is time order and ``ready_at <= :now`` selects exactly the claimable items
(and the rules).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from pyncette.abc import PARKED_AT, PauseRule, Record
from pyncette.errors import ConfigurationError

Item = dict[str, dict[str, Any]]

PARTITION_KEY = "partition_id"
SORT_KEY = "task_id"
READY_AT = "ready_at"
INDEX_NAME = "ready_at"
HELD_AT = "held_at"
RULE = "pause_rule"
RULE_INFO = "pause_info"
#: Sort keys starting with this are not records (rule items); no record name may start with it.
RESERVED = "\x00"
#: The sort keys of rule items start with this.
RULE_KEY = "\x00pause:"
#: The ``ready_at`` of rule items: sorts before every time (and every other string but the empty one).
RULE_READY = "\x00pause"
#: The smallest sort key a record can have.
FIRST_NAME = "\x01"

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
    if record.name.startswith(RESERVED):
        raise ConfigurationError(
            f"task name {record.name[:50]!r} cannot be stored in DynamoDB: a leading NUL is reserved (pause rules)"
        )
    check_parent(prefix, record.parent)
    if record.spec is not None and len(record.spec.encode()) > _MAX_SPEC_BYTES:
        raise ConfigurationError(
            f"spec of task {record.name[:50]!r} is too large for DynamoDB (at most {_MAX_SPEC_BYTES} bytes)"
        )
    check_state(record.name, record.state)


def fits(prefix: str, parent: str) -> bool:
    """Whether ``parent`` makes a partition key DynamoDB accepts."""
    return len(partition_id(prefix, parent).encode()) <= _MAX_PARTITION_BYTES


def check_parent(prefix: str, parent: str) -> None:
    """Refuse, up front, a parent too long for a partition key."""
    if not fits(prefix, parent):
        raise ConfigurationError(f"task parent {parent[:50]!r} is too long for a DynamoDB partition key")


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


def is_rule(item: Item) -> bool:
    """Whether ``item`` (of a parent's partition) is a pause rule rather than a record."""
    return str(item[SORT_KEY]["S"]).startswith(RESERVED)


def rule_key(prefix: str, parent: str, match: str, *, is_prefix: bool) -> Item:
    """The primary key of the rule ``(parent, match, is_prefix)``: hashed, so any match fits in a sort key."""
    digest = hashlib.sha256(_rule_text(match, is_prefix=is_prefix).encode("utf-8", "surrogatepass")).hexdigest()
    return key(prefix, parent, RULE_KEY + digest)


def _rule_text(match: str, *, is_prefix: bool) -> str:
    return ("*" if is_prefix else "=") + match


def rule_item(prefix: str, rule: PauseRule) -> Item:
    """The item storing ``rule``."""
    check_parent(prefix, rule.parent)
    if rule.info is not None and len(rule.info.encode()) > _MAX_STATE_BYTES:
        raise ConfigurationError(
            f"info of pause {rule.match[:50]!r} is too large for DynamoDB (at most {_MAX_STATE_BYTES} bytes)"
        )
    item = rule_key(prefix, rule.parent, rule.match, is_prefix=rule.prefix)
    item[READY_AT] = {"S": RULE_READY}
    item[RULE] = {"S": _rule_text(rule.match, is_prefix=rule.prefix)}
    if rule.info is not None:
        item[RULE_INFO] = {"S": rule.info}
    return item


def decode_rule(parent: str, item: Item) -> PauseRule | None:
    """The rule stored in a rule item; ``None`` when it is damaged (then it holds nothing)."""
    value = text(item, RULE)
    if not value or value[0] not in "*=":
        return None
    return PauseRule(parent=parent, match=value[1:], prefix=value[0] == "*", info=text(item, RULE_INFO))


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
    if stored_time(item, READY_AT) is None and (READY_AT in item or stored_time(item, HELD_AT) is None):
        # Not (or wrongly) in the ready_at index, and not set aside by a pause either: no claim would find it.
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
