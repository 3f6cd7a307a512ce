"""Reading and setting aside the data Pyncette 1.x kept in Redis, for ``pyncette migrate --from-1x``.

1.x layout of namespace ``N`` (no hash tags; 1.x never ran on Redis Cluster)::

    pyncette:N:task:<canonical name>   hash: version, execute_after, locked_until, locked_by, task_spec
    pyncette:N:index                   sorted set of the static tasks
    pyncette:N:index:<parent>          sorted set of one template (or one partition ``<template>:<shard>``)

An index member is ``<time>_<record key>``. The 2.x keys of the same namespace all start with
``pyncette:{`` (see :func:`~pyncette_redis._repository.parent_tag`), so the two layouts never share a key.

Setting aside renames every 1.x key to ``pyncette:N:1x-backup:<rest of the key>`` (RENAME is atomic per key)
and then writes the marker ``pyncette:N:1x-backup`` (a string). A run interrupted half-way leaves some keys
renamed and no marker: the store then still counts as live, and the next run renames the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis

from pyncette.abc import LegacyRow, LegacyStore, map_exceptions

from ._repository import ERRORS

_SCAN_COUNT = 1000
_RENAME_BATCH = 500
_MARKER_VALUE = "set aside by pyncette migrate --from-1x"

# One reply per batch rather than one per key: redis-py parses replies in Python, which made reading
# 100,000 records take several times longer than converting and writing them.
#: KEYS: record hashes; returns a JSON array of [execute_after, locked_until, locked_by, task_spec, version]
#: (false where a field, or the whole record, is missing).
_READ = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, 'execute_after', 'locked_until', 'locked_by', 'task_spec', 'version')
end
return cjson.encode(out)
"""
#: KEYS: source, target, source, target...; renames each source that exists (a key SCAN returned twice, or
#: renamed by an interrupted run, is gone already).
_RENAME = """
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
  end
end
return 1
"""


def _glob(text: str) -> str:
    """``text`` with SCAN MATCH's special characters escaped."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _time(raw: str | None) -> datetime | None:
    """A 1.x time (``datetime.isoformat()`` of an aware UTC time) as aware UTC; ``None`` when absent."""
    if not raw:
        return None
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class RedisLegacyStore(LegacyStore):
    """The 1.x keys of one namespace on one (standalone) server."""

    def __init__(self, client: Redis, namespace: str, server: str) -> None:
        self._client = client
        self._namespace = namespace
        self._server = server
        self._base = f"pyncette:{namespace}:"
        self._backup = f"{self._base}1x-backup:"
        self._marker = f"{self._base}1x-backup"
        self._read = client.register_script(_READ)
        self._rename_script = client.register_script(_RENAME)

    async def describe(self) -> str:
        return f"Redis namespace {self._namespace!r} at {self._server}"

    def _is_live_index(self, key: str, base: str) -> bool:
        return key == f"{base}index" or key.startswith(f"{base}index:")

    async def _keys(self, prefix: str, kind: str | None) -> AsyncIterator[str]:
        """Keys starting with ``prefix`` of type ``kind`` (any when ``None``); SCAN may return one twice."""
        async for key in self._client.scan_iter(match=_glob(prefix) + "*", count=_SCAN_COUNT, _type=kind):
            yield key

    async def _any(self, prefix: str, kind: str, base: str | None = None) -> bool:
        async for key in self._keys(prefix, kind):
            if base is None or self._is_live_index(key, base) or key.startswith(f"{base}task:"):
                return True
        return False

    async def has_live_data(self) -> bool:
        with map_exceptions(ERRORS, f"redis 1.x check at {self._server}"):
            if await self._any(f"{self._base}index", "zset", self._base):
                return True
            if await self._any(f"{self._base}task:", "hash"):
                return True
            # Renamed keys without the marker: an interrupted set-aside, still to be completed.
            return not await self._client.exists(self._marker) and await self._any(self._backup, "zset")

    async def has_backup(self) -> bool:
        with map_exceptions(ERRORS, f"redis 1.x check at {self._server}"):
            return bool(await self._client.exists(self._marker))

    async def live_leases(self, now: datetime) -> int:
        count = 0
        with map_exceptions(ERRORS, f"redis 1.x lease check at {self._server}"):
            async for keys in _batched(self._keys(f"{self._base}task:", "hash"), _RENAME_BATCH):
                for fields in await self._fields(keys):
                    until = _time(fields[1] or None)
                    count += until is not None and until > now
        return count

    async def set_aside(self) -> None:
        with map_exceptions(ERRORS, f"redis 1.x set-aside at {self._server}"):
            for kind in ("hash", "zset"):
                async for keys in _batched(self._keys(self._base, kind), _RENAME_BATCH):
                    live = [
                        key
                        for key in keys
                        if key.startswith(f"{self._base}task:") or self._is_live_index(key, self._base)
                    ]
                    await self._rename(live)
            await self._client.set(self._marker, _MARKER_VALUE)

    async def _rename(self, keys: list[str]) -> None:
        if keys:
            pairs = [name for key in keys for name in (key, self._backed_up(key))]
            await self._rename_script(keys=pairs)

    async def _fields(self, keys: list[str]) -> list[list[Any]]:
        """The 1.x fields of each record hash (see ``_READ``)."""
        if not keys:
            return []
        found: list[list[Any]] = json.loads(await self._read(keys=keys))
        return found

    def rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._rows(batch, live=False)

    def live_rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        return self._rows(batch, live=True)

    async def _rows(self, batch: int, *, live: bool) -> AsyncIterator[list[LegacyRow]]:
        """The records of the backup, or (``live``) of the original place together with whatever an
        interrupted set-aside already renamed (no marker is written until it completes)."""
        places = [self._backup, self._base] if live else [self._backup]
        indexes: dict[str, str] = {}  # an index key without its base -> the base it is under (live wins)
        with map_exceptions(ERRORS, f"redis 1.x read at {self._server}"):
            for base in places:
                async for key in self._keys(f"{base}index", "zset"):
                    if self._is_live_index(key, base):
                        indexes[key[len(base) :]] = base
        for suffix in sorted(indexes):
            parent = None if suffix == "index" else suffix[len("index:") :]
            index, start = indexes[suffix] + suffix, 0
            while True:
                with map_exceptions(ERRORS, f"redis 1.x read at {self._server}"):
                    members = [str(m) for m in await self._client.zrange(index, start, start + batch - 1)]
                    if not members:
                        break
                    start += len(members)
                    keys = [key for key in map(self._record_key, members) if key is not None]
                    values = await self._fields([key if live else self._backed_up(key) for key in keys])
                    if live:
                        moved = [i for i, found in enumerate(values) if found[4] is False]
                        renamed = await self._fields([self._backed_up(keys[i]) for i in moved])
                        for i, found in zip(moved, renamed, strict=True):
                            values[i] = found
                rows = []
                for key, (execute_after, locked_until, locked_by, spec, version) in zip(keys, values, strict=True):
                    if version is False:  # the index named a record that no longer exists
                        continue
                    rows.append(
                        LegacyRow(
                            name=key[len(f"{self._base}task:") :],
                            parent=parent,
                            spec=spec or None,
                            execute_after=_time(execute_after or None),
                            locked_until=_time(locked_until or None),
                            locked_by=locked_by or None,
                        )
                    )
                if rows:
                    yield rows

    def _record_key(self, member: str) -> str | None:
        """The (original) key of the record an index member names (``None`` for a member of another shape)."""
        _, separator, key = member.partition("_")
        return key if separator and key.startswith(f"{self._base}task:") else None

    def _backed_up(self, key: str) -> str:
        """Where set-aside moves the key ``key``."""
        return self._backup + key[len(self._base) :]

    async def drop_backup(self) -> None:
        with map_exceptions(ERRORS, f"redis 1.x backup drop at {self._server}"):
            async for keys in _batched(self._keys(self._backup, None), _RENAME_BATCH):
                await self._client.unlink(*keys)
            await self._client.unlink(self._marker)


async def _batched(keys: AsyncIterator[str], size: int) -> AsyncIterator[list[str]]:
    batch: list[str] = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
