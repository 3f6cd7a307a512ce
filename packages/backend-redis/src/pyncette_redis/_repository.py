"""The Redis repository: records of one parent live in five keys sharing a hash tag (see :mod:`._scripts`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, NoScriptError, RedisClusterException, RedisError

from pyncette.abc import PARKED_AT, Completion, Lease, PauseRule, Record, RegisterMode, Repository, map_exceptions
from pyncette.errors import BackendError

from . import _scripts
from ._scripts import Script

Client = Redis | RedisCluster

#: Every connection of a repository is named this, a dash and a per-repository suffix.
CLIENT_NAME_PREFIX = "pyncette"

#: Every key starts with this, then the hash tag ``{<namespace>:<hex of parent>}``.
KEY_PREFIX = "pyncette:"

ERRORS: dict[type[BaseException], type[Exception]] = {
    RedisError: BackendError,
    RedisClusterException: BackendError,
    OSError: BackendError,
    asyncio.TimeoutError: BackendError,
}

_MODES = {RegisterMode.CREATE: "c", RegisterMode.UPDATE: "u", RegisterMode.FORCE: "f"}
_DELETE = ""
_UNLOCK = "-"
_KEY_CACHE_SIZE = 4096

#: The pub/sub channel of a namespace's wake-ups is this followed by the namespace.
CHANNEL_PREFIX = "pyncette:wake:"
#: A wake-up connection quiet this many seconds is PINGed; one quiet twice as long counts as lost.
HEARTBEAT = 30.0


def parent_tag(namespace: str, parent: str) -> str:
    """The hash tag of a parent: hex keeps ``{``, ``}`` and glob characters out of key names."""
    return "{" + namespace + ":" + parent.encode("utf-8", "surrogatepass").hex() + "}"


def namespace_pattern(namespace: str) -> str:
    """A SCAN MATCH pattern for every key of ``namespace`` (namespaces are ``[A-Za-z0-9_]*``)."""
    return KEY_PREFIX + "{" + namespace + ":*"


def _parent_of(key: str, namespace: str) -> tuple[str, str] | None:
    """The hex and the name of the parent whose ``rec`` key ``key`` is; ``None`` for a key of another shape."""
    head, tail = KEY_PREFIX + "{" + namespace + ":", "}:rec"
    if not (key.startswith(head) and key.endswith(tail)):
        return None
    hexed = key[len(head) : -len(tail)]
    if not _HEX.fullmatch(hexed):
        return None
    try:
        return hexed, bytes.fromhex(hexed).decode("utf-8", "surrogatepass")
    except (ValueError, UnicodeDecodeError):
        return None


_HEX = re.compile(r"(?:[0-9a-f]{2})*")


def _at(value: datetime) -> str:
    return repr(value.timestamp())


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# What the scripts accept as a stored time (see _scripts._LOAD): decimal text or a number, years 1 to 9999.
_NUMBER = re.compile(r"-?[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?")
_EARLIEST, _BEYOND = -62135596800.0, 253402300800.0


def _time(value: object) -> datetime:
    """A stored time; ``ValueError`` when it is not one."""
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value):
            raise ValueError
        number = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError
    if not (math.isfinite(number) and _EARLIEST <= number < _BEYOND):
        raise ValueError
    try:
        return datetime.fromtimestamp(number, tz=timezone.utc)
    except (OverflowError, OSError) as exc:
        raise ValueError from exc


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def decode(parent: str, name: str, body: object) -> Record:
    """Build a record from its stored JSON value (already parsed).

    A value that cannot be decoded gives a record with ``corrupt`` set and what could be read
    filled in: an unreadable ``scheduled_at`` is :data:`~pyncette.abc.PARKED_AT`, an unreadable lease ``None``.
    """
    if not isinstance(body, dict):
        return Record(parent, name, None, PARKED_AT, corrupt="redis record: the stored value is not a JSON object")
    problems: list[str] = []
    spec, token, state = body.get("d"), body.get("t"), body.get("x")
    if spec is not None and not isinstance(spec, str):
        problems.append(f"the spec is not text: {_shown(spec)}")
        spec = None
    if state is not None and not isinstance(state, str):
        problems.append(f"the state is not text: {_shown(state)}")
        state = None
    if token is not None and not isinstance(token, str):
        problems.append(f"the lease token is not text: {_shown(token)}")
        token = None
    try:
        scheduled_at = _time(body.get("s"))
    except ValueError:
        problems.append(f"scheduled_at is not a time: {_shown(body.get('s'))}")
        scheduled_at = PARKED_AT
    locked_until = None
    if body.get("l") is not None:
        try:
            locked_until = _time(body["l"])
        except ValueError:
            problems.append(f"locked_until is not a time: {_shown(body['l'])}")
            token = None
    corrupt = f"redis record: {'; '.join(problems)}" if problems else None
    return Record(parent, name, spec, scheduled_at, locked_until, token, corrupt=corrupt, state=state)


def decode_text(parent: str, name: str, raw: str) -> Record:
    """Build a record from its stored text (see :func:`decode`); invalid JSON gives a corrupt record."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return Record(parent, name, None, PARKED_AT, corrupt=f"redis record: the stored value is not JSON: {exc}")
    return decode(parent, name, body)


def _claimed(parent: str, entry: list[Any]) -> Record:
    """One entry of the claim script's answer: a leased record, or a quarantined unreadable one."""
    if len(entry) == 2:
        return decode(parent, entry[0], entry[1])
    name, raw, reason = entry
    found = decode_text(parent, name, raw)
    return replace(found, locked_until=None, locked_by=None, corrupt=found.corrupt or f"redis record: {reason}")


class RedisRepository(Repository):
    """A repository on one Redis server, in one namespace; ``client_name`` is the name its connections
    carry, unique to it (``kill_connections`` cuts the connections carrying it).

    Scripts are loaded when the repository opens and called with EVALSHA; a
    server that lost them (``SCRIPT FLUSH``, restart, failover) gets them again
    on the first ``NOSCRIPT`` reply, transparently.
    """

    def __init__(self, client: Client, namespace: str, client_name: str) -> None:
        self._client = client
        self._execute: Callable[..., Awaitable[Any]] = client.execute_command
        self._namespace = namespace
        self._client_name = client_name
        self._keys: dict[str, tuple[str, str, str, str, str]] = {}
        self._channel = CHANNEL_PREFIX + namespace

    @property
    def namespace(self) -> str:
        """The namespace whose keys this repository reads and writes."""
        return self._namespace

    @property
    def channel(self) -> str:
        """The pub/sub channel the scripts publish this namespace's wake-ups on."""
        return self._channel

    def keys(self, parent: str) -> tuple[str, str, str, str, str]:
        """The ``due``, ``rec``, ``idx``, ``pause`` and ``held`` keys of ``parent``, in the order the scripts
        take them."""
        found = self._keys.get(parent)
        if found is None:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            base = KEY_PREFIX + parent_tag(self._namespace, parent)
            found = (base + ":due", base + ":rec", base + ":idx", base + ":pause", base + ":held")
            self._keys[parent] = found
        return found

    async def load_scripts(self) -> None:
        """Load every script into the server's script cache (one round trip; one per script on a cluster)."""
        if isinstance(self._client, RedisCluster):
            # SCRIPT LOAD goes to every primary only outside a pipeline.
            for script in _scripts.ALL:
                await self._client.script_load(script.source)
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for script in _scripts.ALL:
                pipe.script_load(script.source)
            await pipe.execute()

    async def _command(self, *args: Any) -> Any:
        try:
            return await self._execute(*args)
        except ConnectionError:
            await self._drop_idle_connections()
            raise

    async def _drop_idle_connections(self) -> None:
        # One broken connection (server restart, CLIENT KILL) means the idle ones
        # are most likely broken too: reconnect them all rather than failing once per connection.
        if isinstance(self._client, Redis):
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect(inuse_connections=False)

    async def _call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load_scripts()
            return await self._command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _call_many(self, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run several script calls in one pipelined round trip (each stays atomic on its own)."""
        if len(calls) == 1:
            return [await self._call(*calls[0])]
        results = await self._pipeline(calls)
        lost = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if lost:
            # NOSCRIPT means the call did not run at all, so repeating it is safe.
            await self.load_scripts()
            for i, result in zip(lost, await self._pipeline([calls[i] for i in lost]), strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _pipeline(self, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]]) -> list[Any]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return list(await pipe.execute(raise_on_error=False))
        except ConnectionError:
            await self._drop_idle_connections()
            raise

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        if not records:
            return []
        by_parent: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            by_parent.setdefault(record.parent, []).append(i)
        code, at_now = _MODES[mode], _at(now)
        calls: list[tuple[Script, Sequence[str], Sequence[Any]]] = []
        for parent, indexes in by_parent.items():
            batch = [
                (records[i].name, _at(records[i].scheduled_at), records[i].spec, records[i].state) for i in indexes
            ]
            calls.append((_scripts.REGISTER, self.keys(parent), (code, at_now, _json(batch), self._channel)))
        with map_exceptions(ERRORS, "redis register"):
            results = await self._call_many(calls)
        return _scatter(len(records), by_parent.values(), results)

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        if limit <= 0:
            return []
        due, rec, _, pause, _ = self.keys(parent)
        with map_exceptions(ERRORS, "redis claim"):
            text = await self._call(_scripts.CLAIM, (due, rec, pause), (_at(now), limit, _at(lease_until), token))
        return [_claimed(parent, entry) for entry in json.loads(text)]

    async def _settle(self, items: Sequence[tuple[str, str, str, str, str | None, int]], what: str) -> list[bool]:
        """Finish leases; each item is (parent, name, token, action, state, keep) as the ``settle`` script
        takes it."""
        if not items:
            return []
        by_parent: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_parent.setdefault(item[0], []).append(i)
        calls: list[tuple[Script, Sequence[str], Sequence[Any]]] = []
        for parent, indexes in by_parent.items():
            calls.append((_scripts.SETTLE, self.keys(parent), (_json([items[i][1:] for i in indexes]),)))
        with map_exceptions(ERRORS, what):
            results = await self._call_many(calls)
        return _scatter(len(items), by_parent.values(), results)

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        return await self._settle(
            [
                (
                    c.parent,
                    c.name,
                    c.token,
                    _DELETE if c.next_at is None else _at(c.next_at),
                    c.state,
                    0 if c.release else 1,
                )
                for c in completions
            ],
            "redis commit",
        )

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        items = [(lease.parent, lease.name, lease.token, _UNLOCK, None, 0) for lease in leases]
        return await self._settle(items, "redis unlock")

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        with map_exceptions(ERRORS, "redis extend"):
            done = await self._call(
                _scripts.EXTEND, self.keys(lease.parent), (lease.name, lease.token, _at(lease_until))
            )
        return bool(done)

    async def delete(self, parent: str, name: str) -> bool:
        with map_exceptions(ERRORS, "redis delete"):
            done = await self._call(_scripts.DELETE, self.keys(parent), (name,))
        return bool(done)

    async def delete_many(self, keys: Sequence[tuple[str, str]]) -> list[bool]:
        if not keys:
            return []
        calls = [(_scripts.DELETE, self.keys(parent), (name,)) for parent, name in keys]
        with map_exceptions(ERRORS, "redis delete"):
            return [bool(done) for done in await self._call_many(calls)]

    async def get(self, parent: str, name: str) -> Record | None:
        with map_exceptions(ERRORS, "redis get"):
            raw = await self._command("HGET", self.keys(parent)[1], name)
        return None if raw is None else decode_text(parent, name, raw)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        _, rec, idx, _, _ = self.keys(parent)
        start = "-" if continuation is None else "(" + continuation
        with map_exceptions(ERRORS, "redis list"):
            continuation, *flat = await self._call(_scripts.LIST, (idx, rec), (start, max(limit, 1)))
        records = [decode_text(parent, flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        return records, continuation

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        kind = "p" if rule.prefix else "n"
        with map_exceptions(ERRORS, "redis pause"):
            matched = await self._call(_scripts.PAUSE, self.keys(rule.parent), (kind, rule.match, _json(rule.info)))
        return int(matched)

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        with map_exceptions(ERRORS, "redis resume"):
            done = await self._call(_scripts.RESUME, self.keys(parent), ("p" if prefix else "n", match, self._channel))
        return bool(done)

    async def pauses(self, parent: str) -> list[PauseRule]:
        with map_exceptions(ERRORS, "redis pauses"):
            stored: dict[str, str] = await self._command("HGETALL", self.keys(parent)[3])
        rules = []
        for key, value in stored.items():
            if key[:1] not in ("p", "n"):
                continue  # not written by Pyncette
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                decoded = value
            info = decoded if decoded is None or isinstance(decoded, str) else value
            rules.append(PauseRule(parent, key[1:], key[0] == "p", info))
        return rules

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        args = (
            name,
            _at(now),
            _at(expected),
            _at(scheduled_at),
            "0" if state is None else "1",
            state or "",
            self._channel,
        )
        with map_exceptions(ERRORS, "redis reschedule"):
            done = await self._call(_scripts.RESCHEDULE, self.keys(parent), args)
        return bool(done)

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        """Every page is one ``SCAN`` of the server's keys (of every primary of a cluster) for the namespace's
        ``rec`` hashes, which Redis deletes with their last record; parents come in the order of their hex
        (their UTF-8 bytes), and the continuation is the hex of the last one."""
        limit = max(limit, 1)
        pattern = KEY_PREFIX + "{" + self._namespace + ":*}:rec"
        # The limit + 1 first parents after the continuation; SCAN may return a key more than once.
        found: dict[str, str] = {}
        with map_exceptions(ERRORS, "redis parents"):
            try:
                async for key in self._client.scan_iter(match=pattern, count=1000):
                    parent = _parent_of(key, self._namespace)
                    if parent is not None and (continuation is None or parent[0] > continuation):
                        found[parent[0]] = parent[1]
                        if len(found) > 4 * limit + 4:
                            found = dict(sorted(found.items())[: limit + 1])
            except ConnectionError:
                await self._drop_idle_connections()
                raise
        page = sorted(found.items())[: limit + 1]
        if len(page) > limit:
            return [name for _, name in page[:limit]], page[limit - 1][0]
        return [name for _, name in page], None

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        with map_exceptions(ERRORS, "redis write_raw_spec"):
            await self._call(_scripts.RAW_SPEC, (self.keys(parent)[1],), (name, raw))

    async def corrupt(self, parent: str, name: str) -> None:
        """Testing hook: put garbage into the stored record's ``scheduled_at``, as a hand edit might."""
        rec = self.keys(parent)[1]
        with map_exceptions(ERRORS, "redis corrupt"):
            raw = await self._command("HGET", rec, name)
            if raw is None:
                return
            try:
                body = json.loads(raw)
            except ValueError:
                return  # already unreadable
            body["s"] = "garbage"
            await self._command("HSET", rec, name, _json(body))

    def _targets(self) -> list[tuple[type[AbstractConnection], dict[str, Any]]]:
        """How to connect to each node (one for a standalone server): connection class and arguments."""
        if isinstance(self._client, RedisCluster):
            return [(node.connection_class, node.connection_kwargs) for node in self._client.get_nodes()]
        pool = self._client.connection_pool
        return [(pool.connection_class, pool.connection_kwargs)]

    def wakeups(self) -> AbstractAsyncContextManager[AsyncIterator[datetime]]:
        """SUBSCRIBE to the namespace's channel on a dedicated connection (named as the repository's other
        connections; on a cluster, to a random node: classic PUBLISH reaches every node's subscribers)."""
        return self._listen()

    @contextlib.asynccontextmanager
    async def _listen(self) -> AsyncIterator[AsyncIterator[datetime]]:
        connection_class: type[AbstractConnection]
        if isinstance(self._client, RedisCluster):
            node = self._client.get_random_node()
            connection_class, kwargs = node.connection_class, node.connection_kwargs
        else:
            connection_class, kwargs = self._targets()[0]
        client = Redis.from_pool(ConnectionPool(connection_class=connection_class, max_connections=1, **kwargs))
        pubsub = client.pubsub()
        try:
            with map_exceptions(ERRORS, "redis wake-ups: subscribing"):
                await pubsub.subscribe(self._channel)
                # Entered means subscribed: wait for the confirmation.
                wait = kwargs.get("socket_timeout") or HEARTBEAT
                confirmed = await pubsub.get_message(timeout=wait)
                if not (confirmed and confirmed.get("type") == "subscribe"):
                    raise BackendError("redis wake-ups: the server did not confirm SUBSCRIBE")
            yield _Hints(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def kill_connections(self) -> int:
        """Testing hook: ``CLIENT KILL ID`` every connection named as this repository's (the wake-up
        connection included), on every node.

        The kills go through a separate connection per node (named differently), so every one of
        the repository's connections is cut and no other client of the server is touched.
        """
        targets = self._targets()
        killed = 0
        with map_exceptions(ERRORS, "redis kill_connections"):
            for connection_class, kwargs in targets:
                pool = ConnectionPool(
                    connection_class=connection_class,
                    max_connections=1,
                    **{**kwargs, "client_name": f"{self._client_name}-killer"},
                )
                admin = Redis.from_pool(pool)
                try:
                    for client in await admin.client_list():
                        if client.get("name") == self._client_name:
                            killed += int(await admin.client_kill_filter(_id=client["id"]))
                finally:
                    await admin.aclose()
        return killed


class _Hints:
    """The wake-ups read from a subscribed connection: the due time each message carries (aware UTC).

    Messages that are not a time (a foreign publisher) are skipped. Connection loss raises
    :class:`~pyncette.errors.BackendError`; so does a connection that stays silent after a PING.
    """

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub
        self._pinged = False

    def __aiter__(self) -> _Hints:
        return self

    async def __anext__(self) -> datetime:
        while True:
            with map_exceptions(ERRORS, "redis wake-ups"):
                message = await self._pubsub.get_message(timeout=HEARTBEAT)
                if message is None:
                    if self._pinged:
                        raise BackendError(f"redis wake-ups: no answer to PING within {HEARTBEAT:g}s")
                    await self._pubsub.ping()
                    self._pinged = True
                    continue
            self._pinged = False
            if message.get("type") != "message":
                continue
            try:
                return _time(message.get("data"))
            except ValueError:
                continue


def _scatter(size: int, groups: Iterable[Sequence[int]], results: Sequence[str]) -> list[bool]:
    """Put per-parent script results (strings of '1' and '0') back in the order of the caller's batch."""
    flags = [False] * size
    for indexes, flags_of_parent in zip(groups, results, strict=True):
        for i, flag in zip(indexes, flags_of_parent, strict=True):
            flags[i] = flag == "1"
    return flags
