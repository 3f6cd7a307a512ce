"""Redis-specific behaviour: options, connection failures, key layout, script reloading, purge."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from pyncette.abc import PARKED_AT, Completion, Lease, PauseRule, Record, RegisterMode, Repository
from pyncette.errors import BackendError, ConfigurationError
from pyncette_conformance.servers import RedisServer
from pyncette_redis import RedisRepository, backend, redis_repository
from pyncette_redis._backend import RedisSettings

pytestmark = pytest.mark.anyio


T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
LEASE = T0 + timedelta(seconds=30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rec(name: str, parent: str = "p", at: datetime = T0, spec: str | None = '{"v": 1}') -> Record:
    return Record(parent=parent, name=name, spec=spec, scheduled_at=at)


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def options(redis_url: str, namespace: str) -> AsyncIterator[dict[str, Any]]:
    opts: dict[str, Any] = {"redis_url": redis_url, "redis_namespace": namespace}
    try:
        yield opts
    finally:
        await purge(opts)


async def purge(options: dict[str, Any]) -> None:
    await backend.purge(backend.settings(options))


def opened(options: dict[str, Any]) -> AbstractAsyncContextManager[Repository]:
    return backend.open(backend.settings(options))


@pytest.fixture
async def repo(options: dict[str, Any]) -> AsyncIterator[Repository]:
    async with opened(options) as repository:
        yield repository


async def open_fails(options: dict[str, Any]) -> BaseException:
    with pytest.raises((ConfigurationError, BackendError)) as info:
        async with opened(options):
            pass
    return info.value


# --- descriptor and options -------------------------------------------------------------


def test_descriptor() -> None:
    assert backend.name == "redis"
    assert redis_repository is backend
    caps = backend.capabilities
    assert (caps.persistent, caps.coordinated, caps.asyncio_only, caps.control) == (True, True, True, True)
    assert caps.notifications


def test_option_schema() -> None:
    # Every 1.x option name and default is kept.
    described = {name: option.describe() for name, option in backend.options.items()}
    assert {name: (d["type"], d["default"], d["isolates"]) for name, d in described.items()} == {
        "redis_url": ("URL", "redis://localhost:6379/0", False),
        "redis_namespace": ("identifier", "", True),
        "redis_timeout": ("seconds", 10.0, False),
        "redis_connect_timeout": ("seconds", 5.0, False),
        "redis_pool_size": ("integer", None, False),
        "redis_cluster": ("boolean", False, False),
    }
    assert not any(d["secret"] or d["required"] for d in described.values())
    settings = backend.settings({})
    assert dict(settings) == {
        "redis_url": "redis://localhost:6379/0",
        "redis_namespace": "",
        "redis_timeout": 10.0,
        "redis_connect_timeout": 5.0,
        "redis_pool_size": None,
        "redis_cluster": False,
    }
    assert RedisSettings.of(settings).pool_size == 50
    assert RedisSettings.of(backend.settings({"redis_cluster": "yes"})).pool_size == 100
    assert RedisSettings.of(backend.settings({"redis_cluster": "yes", "redis_pool_size": "7"})).pool_size == 7
    assert backend.isolated_options("tabc", Path("/nonexistent")) == {"redis_namespace": "tabc"}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("redis_namespace", "has-dash", "'has-dash'"),
        ("redis_namespace", "x}:{y", "'x}:{y'"),
        ("redis_namespace", "a" * 65, "at most 64"),
        ("redis_namespace", 5, "5"),
        ("redis_url", "http://localhost:6379", "'http'"),
        ("redis_url", "localhost:6379", "redis://"),
        ("redis_url", "redis://localhost:abc/0", "port"),
        ("redis_url", "redis://localhost:6379/db", "'db'"),
        ("redis_url", "redis://localhost:6379/0?db=abc", "'db'"),
        ("redis_url", "redis://localhost:6379/0?no_such_parameter=1", "no_such_parameter"),
        ("redis_url", "redis://localhost:6379/0?no_such_parameter=1&redis_cluster=1", "no_such_parameter"),
        ("redis_url", 42, "42"),
        ("redis_timeout", 0, "0"),
        ("redis_timeout", -1.5, "-1.5"),
        ("redis_timeout", "soon", "'soon'"),
        ("redis_timeout", True, "True"),
        ("redis_connect_timeout", float("inf"), "inf"),
        ("redis_pool_size", 0, "0"),
        ("redis_pool_size", "many", "'many'"),
        ("redis_cluster", "maybe", "'maybe'"),
        ("redis_cluster", 2, "2"),
    ],
)
async def test_bad_option_values_are_refused(key: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.settings({key: value})
    assert key in str(info.value)
    assert expected in str(info.value)


async def test_unknown_url_parameter_is_refused_with_the_cluster_client_too() -> None:
    with pytest.raises(ConfigurationError, match="no_such_parameter"):
        backend.settings({"redis_url": "redis://localhost:6379/0?no_such_parameter=1", "redis_cluster": True})


async def test_unknown_option_is_refused() -> None:
    error = await open_fails({"redis_host": "localhost"})
    assert isinstance(error, ConfigurationError)
    assert "redis_host" in str(error)


SECRET_URLS = [
    # The brief's example: short secrets, masked by their position in the URL.
    "redis://u:pw@127.0.0.1:1/0?password=x&token=y",
    "redis://user:s3cret-pw@127.0.0.1:1/0?password=pass-s3cret",
    "redis://user:s3cret-pw@127.0.0.1:1/0?password=pass-s3cret&token=tok-s3cret",
    "http://user:s3cret-pw@127.0.0.1:1/0?token=tok-s3cret",
    "redis://user:s3cret-pw@127.0.0.1:1/nodb?password=pass-s3cret",
    "redis://user:s3cret-pw@127.0.0.1:1/0?password=pass-s3cret&socket_timeout=bad",
    "rediss://user:s3cret-pw@127.0.0.1:1/0?password=pass-s3cret",
    "unix://user:s3cret-pw@/nonexistent/redis.sock?password=pass-s3cret",
]


def assert_no_secret(text: str) -> None:
    for secret in ("s3cret", "u:pw@", "password=x", "token=y", "password=pass", "token=tok"):
        assert secret not in text, text


@pytest.mark.parametrize("cluster", [False, True])
@pytest.mark.parametrize("url", SECRET_URLS)
async def test_errors_never_show_secrets(url: str, cluster: bool) -> None:
    started = time.monotonic()
    error = await open_fails({"redis_url": url, "redis_cluster": cluster, "redis_connect_timeout": 2})
    assert time.monotonic() - started < 5
    assert_no_secret(str(error))
    assert_no_secret("".join(traceback.format_exception(error)))
    if isinstance(error, BackendError):
        assert "127.0.0.1:1" in str(error) or "redis.sock" in str(error)
    else:
        assert "redis_url" in str(error)


async def test_options_accept_strings_and_timedeltas(redis_url: str, namespace: str) -> None:
    options = {
        "redis_url": redis_url,
        "redis_namespace": namespace,
        "redis_timeout": "2.5",
        "redis_connect_timeout": timedelta(seconds=2),
        "redis_pool_size": "3",
        "redis_cluster": None,  # None means the default, as in 1.x
    }
    async with opened(options) as repository:
        assert await repository.get("p", "missing") is None
    async with backend(**{**options, "redis_cluster": "off"}) as repository:
        assert await repository.get("p", "missing") is None


async def test_unreachable_server_fails_fast() -> None:
    started = time.monotonic()
    error = await open_fails({"redis_url": "redis://127.0.0.1:1/0", "redis_connect_timeout": 2})
    assert time.monotonic() - started < 5
    assert isinstance(error, BackendError)
    assert "127.0.0.1:1" in str(error)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener on a free loopback port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for connection in accepted:
            connection.close()


@pytest.mark.parametrize("cluster", [False, True])
async def test_connect_timeout_bounds_a_silent_server(silent_server: int, cluster: bool) -> None:
    # The server accepts the connection and never answers: start-up must fail within
    # redis_connect_timeout, not redis_timeout (left at its default, 10 s). Real time on purpose.
    connect_timeout = 1.0
    started = time.monotonic()
    error = await open_fails(
        {
            "redis_url": f"redis://u:s3cret-pw@127.0.0.1:{silent_server}/0",
            "redis_connect_timeout": connect_timeout,
            "redis_cluster": cluster,
        }
    )
    elapsed = time.monotonic() - started
    assert connect_timeout * 0.9 <= elapsed < connect_timeout + 2, elapsed
    assert isinstance(error, BackendError)
    assert f"127.0.0.1:{silent_server}" in str(error)
    assert "redis_connect_timeout" in str(error)
    assert_no_secret(str(error))


async def test_wrong_credentials_are_a_configuration_error(redis_url: str) -> None:
    parts = redis_url.split("://", 1)
    url = f"{parts[0]}://nobody-{uuid.uuid4().hex[:6]}:s3cret-pw@{parts[1].split('@')[-1]}"
    error = await open_fails({"redis_url": url})
    assert isinstance(error, ConfigurationError)
    assert "s3cret-pw" not in str(error)


async def test_database_out_of_range_is_a_configuration_error(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    error = await open_fails({"redis_url": f"{base}/100000"})
    assert isinstance(error, ConfigurationError)
    assert "redis_url" in str(error)


def test_importing_does_not_connect() -> None:
    code = (
        "import sys\n"
        "def hook(event, args):\n"
        "    if event in ('socket.connect', 'socket.getaddrinfo'):\n"
        "        raise RuntimeError(event)\n"
        "sys.addaudithook(hook)\n"
        "import pyncette_redis\n"
        "print(pyncette_redis.backend.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "redis"


# --- storage layout ---------------------------------------------------------------------


def tag(namespace: str, parent: str) -> str:
    return "{" + namespace + ":" + parent.encode().hex() + "}"


async def test_key_layout(repo: Repository, admin: redis.asyncio.Redis, namespace: str) -> None:
    parent = "odd}{parent:1"
    await repo.register([rec("a", parent), rec("b", parent, spec=None)], now=T0, mode=RegisterMode.UPDATE)
    base = f"pyncette:{tag(namespace, parent)}"
    keys = sorted(await admin.keys(f"pyncette:{{{namespace}:*"))
    assert keys == [f"{base}:due", f"{base}:idx", f"{base}:rec"]
    assert await admin.zrange(f"{base}:due", 0, -1, withscores=True) == [("a", T0.timestamp()), ("b", T0.timestamp())]
    assert await admin.zrange(f"{base}:idx", 0, -1, withscores=True) == [("a", 0.0), ("b", 0.0)]
    stored = await admin.hgetall(f"{base}:rec")
    assert json.loads(stored["a"]) == {"s": repr(T0.timestamp()), "d": '{"v": 1}'}
    assert json.loads(stored["b"]) == {"s": repr(T0.timestamp())}
    # Claiming moves the claimable time to the lease expiry and stores the lease in the record.
    await repo.claim(parent, now=T0, limit=1, lease_until=LEASE, token="tok")
    assert await admin.zscore(f"{base}:due", "a") == LEASE.timestamp()
    assert json.loads(await admin.hget(f"{base}:rec", "a") or "") == {
        "s": repr(T0.timestamp()),
        "d": '{"v": 1}',
        "l": repr(LEASE.timestamp()),
        "t": "tok",
    }


async def test_keys_of_a_parent_share_a_cluster_slot_and_partitions_spread(
    repo: Repository, admin: redis.asyncio.Redis, namespace: str
) -> None:
    parents = [f"template:{i}" for i in range(16)]
    await repo.register([rec("x", p) for p in parents], now=T0, mode=RegisterMode.UPDATE)
    slots_by_parent: dict[str, set[int]] = {}
    for p in parents:
        keys = await admin.keys(f"pyncette:{tag(namespace, p)}:*")
        assert len(keys) == 3
        slots_by_parent[p] = {key_slot(str(k).encode()) for k in keys}
    assert all(len(slots) == 1 for slots in slots_by_parent.values())
    assert len(set.union(*slots_by_parent.values())) > 8


async def test_namespaces_isolate_apps_and_purge_deletes_only_its_own(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    one = {"redis_url": redis_url, "redis_namespace": "t" + uuid.uuid4().hex[:12]}
    two = {"redis_url": redis_url, "redis_namespace": one["redis_namespace"] + "x"}
    default = {"redis_url": redis_url}
    bystander = f"not-pyncette:{uuid.uuid4().hex}"
    await admin.set(bystander, "keep")
    try:
        async with opened(one) as r1, opened(two) as r2:
            await r1.register([rec(f"n{i}", f"p{i % 3}") for i in range(1200)], now=T0, mode=RegisterMode.UPDATE)
            await r2.register([rec("n0", "p0")], now=T0, mode=RegisterMode.UPDATE)
            assert len(await r2.claim("p0", now=T0, limit=10, lease_until=LEASE, token="t")) == 1
            assert await r2.get("p1", "n1") is None
            await purge(one)
            assert await admin.keys(f"pyncette:{{{one['redis_namespace']}:*") == []
            assert await r1.get("p1", "n1") is None
            assert await r2.get("p0", "n0") is not None
            assert await admin.get(bystander) == "keep"
        # Purging the default (empty) namespace leaves named namespaces alone.
        await purge(default)
        assert len(await admin.keys(f"pyncette:{{{two['redis_namespace']}:*")) == 3
    finally:
        await purge(two)
        await admin.delete(bystander)


# --- scripts and round trips ------------------------------------------------------------


async def test_calls_survive_script_flush(repo: Repository, admin: redis.asyncio.Redis) -> None:
    await admin.script_flush()
    assert await repo.register([rec("a", "p1"), rec("a", "p2")], now=T0, mode=RegisterMode.UPDATE) == [True, True]
    await admin.script_flush()
    claimed = await repo.claim("p1", now=T0, limit=10, lease_until=LEASE, token="t")
    claimed += await repo.claim("p2", now=T0, limit=10, lease_until=LEASE, token="t")
    assert len(claimed) == 2
    await admin.script_flush()
    # Completions spanning parents go out in one pipeline: every call must be re-run after NOSCRIPT.
    assert await repo.commit([Completion("p1", "a", "t", None), Completion("p2", "a", "t", None)]) == [True, True]
    assert await repo.get("p1", "a") is None
    await admin.script_flush()
    page, _ = await repo.list_page("p1", limit=10, continuation=None)
    assert page == []


class RoundTrips:
    """Counts the packets the client writes: one per command, one per pipeline."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = AbstractConnection.send_packed_command

        async def counting(conn: AbstractConnection, command: Any, check_health: bool = True) -> None:
            self.count += 1
            await original(conn, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)


async def test_batches_take_one_round_trip(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    trips = RoundTrips(monkeypatch)
    records = [rec(f"n{i}", f"p{i % 4}") for i in range(400)]
    assert all(await repo.register(records, now=T0, mode=RegisterMode.UPDATE))
    assert trips.count == 1
    claimed: list[Record] = []
    for p in range(4):
        claimed += await repo.claim(f"p{p}", now=T0, limit=1000, lease_until=LEASE, token="t")
    assert (len(claimed), trips.count) == (400, 5)
    assert all(await repo.unlock([Lease(r.parent, r.name, "t") for r in claimed[:100]]))
    assert trips.count == 6
    claimed = await repo.claim("p0", now=T0, limit=1000, lease_until=LEASE, token="u")
    assert trips.count == 7
    done = await repo.commit([Completion(r.parent, r.name, r.locked_by or "", T0 + timedelta(1)) for r in claimed])
    assert all(done)
    assert trips.count == 8


# --- connection loss --------------------------------------------------------------------


async def retry_once(call: Any) -> Any:
    """Run ``call``; a single BackendError (the connection that broke) is allowed."""
    try:
        return await call()
    except BackendError:
        return await call()


async def test_recovers_after_client_kill(repo: Repository) -> None:
    await repo.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
    # Leave several pooled connections open, then kill them (only this repository's).
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(repo.get, "p", "a")
    assert await repo.kill_connections() >= 1
    claimed = await retry_once(lambda: repo.claim("p", now=T0, limit=10, lease_until=LEASE, token="t"))
    assert sorted(r.name for r in claimed) == ["a", "b"]
    assert await repo.kill_connections() >= 1
    done = await retry_once(lambda: repo.commit([Completion("p", "a", "t", None), Completion("p", "b", "t", None)]))
    assert done == [True, True]
    assert await repo.get("p", "a") is None


async def connection_ids(admin: redis.asyncio.Redis, name: str) -> set[str]:
    return {c["id"] for c in await admin.client_list(_type="normal") if c.get("name") == name}


async def test_kill_connections_cuts_only_the_repositorys_own(
    options: dict[str, Any], admin: redis.asyncio.Redis
) -> None:
    bystander_id = await admin.client_id()
    async with opened(options) as one, opened(options) as two:
        assert isinstance(one, RedisRepository) and isinstance(two, RedisRepository)
        for repository in (one, two):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(repository.get, "p", "a")
        names = {c.get("name") for c in await admin.client_list(_type="normal")}
        mine = [n for n in names if n and n.startswith("pyncette-")]
        ones = await connection_ids(admin, one._client_name)
        twos = await connection_ids(admin, two._client_name)
        assert ones and twos and len(mine) >= 2
        assert await one.kill_connections() == len(ones)
        assert await connection_ids(admin, one._client_name) == set()
        assert await connection_ids(admin, two._client_name) == twos
        # The admin connection was not cut (a reconnect would have a new id).
        assert await admin.client_id() == bystander_id
        assert await one.kill_connections() == 0
        await retry_once(lambda: one.get("p", "a"))
        assert await two.get("p", "a") is None


async def test_recovers_after_server_restart(private_server: RedisServer) -> None:
    options = {"redis_url": private_server.url, "redis_connect_timeout": 1, "redis_timeout": 2}
    async with opened(options) as repo:
        await repo.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
        private_server.stop()
        with pytest.raises(BackendError):
            await repo.get("p", "a")
        private_server.start()
        # The restarted server kept the data (AOF) but lost the scripts: both must be transparent.
        claimed = await retry_once(lambda: repo.claim("p", now=T0, limit=10, lease_until=LEASE, token="t"))
        assert sorted(r.name for r in claimed) == ["a", "b"]
        private_server.stop()
        private_server.start()
        assert await retry_once(lambda: repo.commit([Completion("p", "a", "t", None)])) == [True]
        assert await repo.unlock([Lease("p", "b", "t")]) == [True]


# --- corrupt records ----------------------------------------------------------------------


def stored(s: str, **fields: Any) -> str:
    return json.dumps({"s": s, **fields})


NOW_S = repr(T0.timestamp())

#: Garbage a hand edit or a foreign writer may leave in a record's hash value, and what stays readable.
GARBAGE: dict[str, tuple[str | bytes, bool]] = {
    # kind: (stored value, whether scheduled_at stays readable)
    "invalid json": ("{garbage", False),
    "truncated json": ('{"s": "1893499200.0", "d": "{\\"v', False),
    "invalid utf-8": (b'\xff\xfe{"s": 1', False),
    "json array": ("[1, 2]", False),
    "json string": ('"text"', False),
    "non-numeric scheduled_at": (stored("soon", d='{"v": 1}'), False),
    "hex scheduled_at": (stored("0x10"), False),
    "nan scheduled_at": ('{"s": NaN}', False),
    "scheduled_at after year 9999": (stored("1e300"), False),
    "missing scheduled_at": ('{"d": "x"}', False),
    "boolean scheduled_at": ('{"s": true}', False),
    "non-numeric locked_until": (stored(NOW_S, l="later", t="old"), True),
    "numeric token": (stored(NOW_S, t=5), True),
    "spec not text": (stored(NOW_S, d={"v": 1}), True),
    "state not text": (stored(NOW_S, x={"v": 1}), True),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_corrupt_record_affects_itself_only(
    repo: Repository, admin: redis.asyncio.Redis, namespace: str, kind: str
) -> None:
    garbage, readable = GARBAGE[kind]
    await repo.register([rec("a"), rec("bad"), rec("c"), rec("d")], now=T0, mode=RegisterMode.UPDATE)
    base = f"pyncette:{tag(namespace, 'p')}"
    await admin.hset(f"{base}:rec", "bad", garbage)

    # get and list show it, with the reason, never raise.
    found = await repo.get("p", "bad")
    assert found is not None and found.corrupt and found.corrupt.startswith("redis record:")
    assert found.scheduled_at == (T0 if readable else PARKED_AT)
    assert found.locked_by is None
    page, _ = await repo.list_page("p", limit=10, continuation=None)
    assert [(r.name, bool(r.corrupt)) for r in page] == [("a", False), ("bad", True), ("c", False), ("d", False)]

    # A claim leases the others of the batch and returns the corrupt one unleased, quarantined.
    claimed = await repo.claim("p", now=T0, limit=10, lease_until=LEASE, token="tok")
    assert [(r.name, r.locked_by, bool(r.corrupt)) for r in claimed] == [
        ("a", "tok", False),
        ("bad", None, True),
        ("c", "tok", False),
        ("d", "tok", False),
    ]
    bad = claimed[1]
    assert bad.locked_until is None
    assert bad.scheduled_at == (T0 if readable else PARKED_AT)
    assert await admin.zscore(f"{base}:due", "bad") is None
    assert await admin.zscore(f"{base}:idx", "bad") == 0
    assert await repo.get("p", "bad") == found  # data kept as it was
    # No later claim returns it; the others come back once their lease expires.
    later = LEASE + timedelta(seconds=1)
    again = await repo.claim("p", now=later, limit=10, lease_until=later + timedelta(seconds=30), token="tok2")
    assert [r.name for r in again] == ["a", "c", "d"]

    # Settling or extending a lease on it reports the lease lost and writes nothing.
    assert await repo.commit([Completion("p", "bad", "tok", PARKED_AT)]) == [False]
    assert await repo.unlock([Lease("p", "bad", "tok")]) == [False]
    assert await repo.extend(Lease("p", "bad", "tok"), lease_until=LEASE) is False
    await repo.write_raw_spec("p", "bad", "{}")
    assert await repo.get("p", "bad") == found

    # CREATE leaves it, UPDATE overwrites it as if it were missing, and it is claimable again.
    assert await repo.register([rec("bad", at=T0 + timedelta(hours=1))], now=later, mode=RegisterMode.CREATE) == [False]
    assert await repo.get("p", "bad") == found
    assert await repo.register([rec("bad", at=T0 + timedelta(hours=1))], now=later, mode=RegisterMode.UPDATE) == [True]
    fixed = await repo.get("p", "bad")
    assert fixed == rec("bad", at=T0 + timedelta(hours=1))
    claimed = await repo.claim("p", now=T0 + timedelta(hours=1), limit=10, lease_until=LEASE, token="tok3")
    assert [(r.name, r.corrupt) for r in claimed if r.name == "bad"] == [("bad", None)]


async def test_force_overwrites_a_corrupt_record_and_delete_removes_one(
    repo: Repository, admin: redis.asyncio.Redis, namespace: str
) -> None:
    await repo.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
    base = f"pyncette:{tag(namespace, 'p')}"
    await admin.hset(f"{base}:rec", "a", "{garbage")
    await admin.hset(f"{base}:rec", "b", "{garbage")
    assert await repo.register([rec("a", spec=None)], now=T0, mode=RegisterMode.FORCE) == [True]
    assert await repo.get("p", "a") == rec("a", spec=None)
    assert await repo.delete("p", "b") is True
    assert await repo.get("p", "b") is None
    assert await admin.zscore(f"{base}:idx", "b") is None


async def test_corrupt_hook_damages_the_time_and_keeps_the_spec(repo: Repository) -> None:
    await repo.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
    await repo.corrupt("p", "a")
    found = await repo.get("p", "a")
    assert found is not None
    assert found.corrupt == "redis record: scheduled_at is not a time: 'garbage'"
    assert (found.spec, found.scheduled_at) == ('{"v": 1}', PARKED_AT)
    claimed = await repo.claim("p", now=T0, limit=1, lease_until=LEASE, token="t")
    assert [(r.name, r.corrupt is not None, r.locked_by) for r in claimed] == [("a", True, None)]
    # The quarantined record took a place of the batch; the next claim gets the other.
    claimed = await repo.claim("p", now=T0, limit=1, lease_until=LEASE, token="t")
    assert [(r.name, r.corrupt, r.locked_by) for r in claimed] == [("b", None, "t")]


async def test_a_record_parks_at_the_latest_time(repo: Repository) -> None:
    await repo.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
    assert len(await repo.claim("p", now=T0, limit=1, lease_until=LEASE, token="t")) == 1
    assert await repo.commit([Completion("p", "a", "t", PARKED_AT)]) == [True]
    parked = await repo.get("p", "a")
    assert parked is not None and (parked.scheduled_at, parked.corrupt) == (PARKED_AT, None)
    assert await repo.claim("p", now=PARKED_AT - timedelta(seconds=1), limit=1, lease_until=PARKED_AT, token="t") == []


async def test_a_number_where_text_is_stored_is_read(
    repo: Repository, admin: redis.asyncio.Redis, namespace: str
) -> None:
    # A hand edit writing the time as a JSON number (not the text Pyncette writes) is still a time.
    await repo.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
    await admin.hset(f"pyncette:{tag(namespace, 'p')}:rec", "a", json.dumps({"s": int(T0.timestamp())}))
    assert await repo.get("p", "a") == rec("a", spec=None)
    [claimed] = await repo.claim("p", now=T0, limit=1, lease_until=LEASE, token="t")
    assert (claimed.scheduled_at, claimed.locked_by, claimed.corrupt) == (T0, "t", None)
    assert await repo.commit([Completion("p", "a", "t", None)]) == [True]


# --- data details -----------------------------------------------------------------------


async def test_microseconds_and_unicode_round_trip(repo: Repository) -> None:
    at = datetime(2031, 6, 30, 23, 59, 59, 123456, tzinfo=timezone.utc)
    spec = '{"emoji": "😀", "slash": "a/b", "nl": "x\\ny"}'
    await repo.register([rec("名前 😀", "père/{x}", at, spec)], now=T0, mode=RegisterMode.UPDATE)
    claimed = await repo.claim("père/{x}", now=at, limit=1, lease_until=LEASE, token="tök\n|")
    assert [(r.name, r.spec, r.scheduled_at, r.locked_by) for r in claimed] == [("名前 😀", spec, at, "tök\n|")]
    assert await repo.commit([Completion("père/{x}", "名前 😀", "tök\n|", at + timedelta(microseconds=1))]) == [True]
    stored = await repo.get("père/{x}", "名前 😀")
    assert stored is not None
    assert stored.scheduled_at == at + timedelta(microseconds=1)


async def test_list_page_does_not_repeat_or_skip_while_records_change(repo: Repository) -> None:
    names = [f"n{i:04d}" for i in range(500)]
    await repo.register([rec(n) for n in names], now=T0, mode=RegisterMode.UPDATE)
    seen: list[str] = []
    token: str | None = None
    step = 0
    while True:
        page, token = await repo.list_page("p", limit=37, continuation=token)
        seen.extend(r.name for r in page)
        # Churn between pages: claims, reschedules and extra records must not disturb the order.
        step += 1
        claimed = await repo.claim("p", now=T0 + timedelta(days=step), limit=20, lease_until=LEASE, token="t")
        await repo.commit([Completion("p", r.name, "t", T0 + timedelta(days=step + 1)) for r in claimed])
        await repo.register([rec(f"zz{step}")], now=T0, mode=RegisterMode.CREATE)
        if token is None:
            break
    assert len(seen) == len(set(seen))
    assert set(names) <= set(seen)


async def test_repository_exposes_namespace(repo: Repository, namespace: str) -> None:
    assert isinstance(repo, RedisRepository)
    assert repo.namespace == namespace


# --- Redis Cluster ----------------------------------------------------------------------


async def cluster_nodes(cluster_url: str) -> list[redis.asyncio.Redis]:
    client = redis.asyncio.RedisCluster.from_url(cluster_url)
    try:
        await client.initialize()
        return [
            redis.asyncio.Redis(host=n.host, port=int(n.port), decode_responses=True) for n in client.get_primaries()
        ]
    finally:
        await client.aclose()


async def test_cluster_spreads_parents_reloads_scripts_and_purges(cluster_url: str, namespace: str) -> None:
    options = {"redis_url": cluster_url, "redis_cluster": True, "redis_namespace": namespace}
    nodes = await cluster_nodes(cluster_url)
    try:
        async with opened(options) as repo:
            parents = [f"template:{i}" for i in range(12)]
            await repo.register([rec(f"n{j}", p) for p in parents for j in range(5)], now=T0, mode=RegisterMode.UPDATE)
            holding = [len(await node.keys(f"pyncette:{{{namespace}:*")) for node in nodes]
            assert sum(holding) == 36
            assert sum(1 for count in holding if count) >= 2
            claimed: list[Record] = []
            for p in parents:
                claimed += await repo.claim(p, now=T0, limit=10, lease_until=LEASE, token="t")
            assert len(claimed) == 60
            for node in nodes:
                await node.script_flush()
            # One pipelined commit whose parents live on different nodes, none of which has the scripts.
            done = await repo.commit([Completion(r.parent, r.name, "t", T0 + timedelta(hours=1)) for r in claimed])
            assert done == [True] * 60
            page, _ = await repo.list_page("template:3", limit=10, continuation=None)
            assert sorted(r.name for r in page) == [f"n{j}" for j in range(5)]
        await purge(options)
        assert [await node.keys(f"pyncette:{{{namespace}:*") for node in nodes] == [[], [], []]
    finally:
        for node in nodes:
            await node.aclose()


async def test_cluster_flag_must_match_the_server(cluster_url: str, redis_url: str) -> None:
    error = await open_fails({"redis_url": cluster_url})
    assert isinstance(error, ConfigurationError)
    assert "redis_cluster" in str(error)
    error = await open_fails({"redis_url": redis_url, "redis_cluster": True})
    assert isinstance(error, ConfigurationError)
    assert "redis_cluster" in str(error)


async def test_cluster_unreachable_fails_fast() -> None:
    started = time.monotonic()
    error = await open_fails({"redis_url": "redis://u:s3cret-pw@127.0.0.1:1/0", "redis_cluster": "true"})
    assert time.monotonic() - started < 5
    assert isinstance(error, BackendError)
    assert "127.0.0.1:1" in str(error)
    assert "s3cret-pw" not in str(error)


async def test_cluster_recovers_after_client_kill(cluster_url: str, namespace: str) -> None:
    options = {"redis_url": cluster_url, "redis_cluster": True, "redis_namespace": namespace}
    nodes = await cluster_nodes(cluster_url)
    try:
        async with opened(options) as repo:
            parents = [f"template:{i}" for i in range(6)]
            await repo.register([rec("a", p) for p in parents], now=T0, mode=RegisterMode.UPDATE)
            assert await repo.kill_connections() >= 1
            claimed = await retry_once(lambda: repo.claim("template:0", now=T0, limit=10, lease_until=LEASE, token="t"))
            assert [r.name for r in claimed] == ["a"]
            assert await repo.kill_connections() >= 1
            # A pipeline spanning nodes may fail after some nodes ran their part: UPDATE is safe to repeat.
            done = await retry_once(
                lambda: repo.register([rec("b", p) for p in parents], now=T0, mode=RegisterMode.UPDATE)
            )
            assert done == [True] * 6
            assert all([await repo.get(p, "b") is not None for p in parents])
        await purge(options)
    finally:
        for node in nodes:
            await node.aclose()


# --- the state field (added after 2.0) ---------------------------------------------------------------


async def test_a_record_written_before_the_state_field_keeps_working(
    repo: Repository, admin: redis.asyncio.Redis, namespace: str
) -> None:
    """A record as 2.0 stored it (no ``x``) reads as no state, and gains one only when a commit gives it."""
    await repo.register([rec("old")], now=T0, mode=RegisterMode.UPDATE)
    base = f"pyncette:{tag(namespace, 'p')}"
    assert json.loads(await admin.hget(f"{base}:rec", "old") or "") == {"s": NOW_S, "d": '{"v": 1}'}
    old = await repo.get("p", "old")
    assert old is not None and old.state is None and old.corrupt is None
    [claimed] = await repo.claim("p", now=T0, limit=5, lease_until=LEASE, token="t")
    assert claimed.state is None
    later = T0 + timedelta(hours=1)
    assert await repo.commit([Completion("p", "old", "t", later, state='{"n": 1}', release=False)]) == [True]
    body = json.loads(await admin.hget(f"{base}:rec", "old") or "")
    assert body == {
        "s": repr(later.timestamp()),
        "d": '{"v": 1}',
        "x": '{"n": 1}',
        "l": repr(LEASE.timestamp()),
        "t": "t",
    }
    # Kept leased: claimable at the later of the next time and the lease expiry.
    assert await admin.zscore(f"{base}:due", "old") == later.timestamp()


# --- the control plane: pause rules, held records, parents -------------------------------------------


def names_of(records: list[Record]) -> list[str]:
    return sorted(r.name for r in records)


async def claim_all(repo: Repository, parent: str = "p", now: datetime = T0, token: str = "t") -> list[str]:
    return names_of(await repo.claim(parent, now=now, limit=10_000, lease_until=LEASE, token=token))


async def test_pause_layout(repo: Repository, admin: redis.asyncio.Redis, namespace: str) -> None:
    """Prefix and name rules move the names they match from ``due`` to ``held`` with their score; the
    whole-parent rule is a flag that moves nothing."""
    base = f"pyncette:{tag(namespace, 'p')}"
    later = T0 + timedelta(hours=1)
    await repo.register([rec("ab"), rec("ac", at=later), rec("b"), rec("c")], now=T0, mode=RegisterMode.UPDATE)
    assert await repo.pause(PauseRule("p", "a", True, '{"note": "n"}'), now=T0) == 2
    assert await repo.pause(PauseRule("p", "c", False), now=T0) == 1
    assert await repo.pause(PauseRule("p", "missing", False), now=T0) == 0
    # The info as a JSON string (null for none).
    assert await admin.hgetall(f"{base}:pause") == {"pa": '"{\\"note\\": \\"n\\"}"', "nc": "null", "nmissing": "null"}
    assert await admin.zrange(f"{base}:held", 0, -1, withscores=True) == [
        ("ab", T0.timestamp()),
        ("c", T0.timestamp()),
        ("ac", later.timestamp()),
    ]
    assert await admin.zrange(f"{base}:due", 0, -1) == ["b"]
    assert await repo.pause(PauseRule("p", "", True), now=T0) == 4
    assert await admin.zrange(f"{base}:due", 0, -1) == ["b"]  # the flag moves nothing
    assert await repo.claim("p", now=later, limit=10, lease_until=LEASE, token="t") == []
    assert await repo.resume("p", "", prefix=True, now=T0)
    # Records registered, committed or extended while held go to ``held``, with their claimable time.
    await repo.register([rec("ad")], now=T0, mode=RegisterMode.CREATE)
    assert await admin.zscore(f"{base}:held", "ad") == T0.timestamp()
    assert await admin.zscore(f"{base}:due", "ad") is None
    assert await repo.delete("p", "ad")
    assert await admin.zscore(f"{base}:held", "ad") is None
    # Resuming moves them back, at the score they had.
    assert await repo.resume("p", "a", prefix=True, now=T0)
    assert await admin.zrange(f"{base}:due", 0, -1, withscores=True) == [
        ("ab", T0.timestamp()),
        ("b", T0.timestamp()),
        ("ac", later.timestamp()),
    ]
    assert await admin.zrange(f"{base}:held", 0, -1) == ["c"]
    assert await claim_all(repo, now=later) == ["ab", "ac", "b"]


async def test_held_records_follow_every_write(repo: Repository, admin: redis.asyncio.Redis, namespace: str) -> None:
    base = f"pyncette:{tag(namespace, 'p')}"
    await repo.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
    assert await claim_all(repo) == ["a", "b"]
    await repo.pause(PauseRule("p", "a", False), now=T0)
    await repo.pause(PauseRule("p", "b", False), now=T0)
    # A lease extended, a record kept leased or rescheduled: the claimable time moves within ``held``.
    extended = LEASE + timedelta(minutes=5)
    assert await repo.extend(Lease("p", "a", "t"), lease_until=extended)
    assert await admin.zscore(f"{base}:held", "a") == extended.timestamp()
    later = T0 + timedelta(hours=1)
    assert await repo.commit([Completion("p", "b", "t", later, release=False)]) == [True]
    assert await admin.zscore(f"{base}:held", "b") == later.timestamp()
    assert await repo.unlock([Lease("p", "a", "t")]) == [True]
    assert await admin.zscore(f"{base}:held", "a") == T0.timestamp()
    assert await repo.reschedule("p", "a", expected=T0, scheduled_at=later, state="{}", now=T0)
    assert await admin.zscore(f"{base}:held", "a") == later.timestamp()
    assert await admin.zcard(f"{base}:due") == 0
    await repo.resume("p", "a", prefix=False, now=T0)
    await repo.resume("p", "b", prefix=False, now=T0)
    assert await admin.exists(f"{base}:held", f"{base}:pause") == 0
    assert await claim_all(repo, now=LEASE + timedelta(hours=1), token="u") == ["a", "b"]


async def test_many_rules_are_looked_up_per_name(repo: Repository) -> None:
    """Beyond 64 rules a script looks each name's prefixes up instead of reading every rule."""
    names = [f"n{i:03d}" for i in range(100)] + ["x1", "x12", "xy", "y"]
    await repo.register([rec(n) for n in names], now=T0, mode=RegisterMode.UPDATE)
    for i in range(0, 100, 2):
        await repo.pause(PauseRule("p", f"n{i:03d}", False), now=T0)
    for prefix in ["x1", "zz", "€", "n05", *(f"q{i}" for i in range(20))]:
        await repo.pause(PauseRule("p", prefix, True), now=T0)
    assert len(await repo.pauses("p")) > 64
    free = {f"n{i:03d}" for i in range(1, 100, 2) if not f"n{i:03d}".startswith("n05")} | {"xy", "y"}
    # Registered again (forced, so every record is written) while the rules exist.
    await repo.register([rec(n) for n in [*names, "x123", "€uro"]], now=T0, mode=RegisterMode.FORCE)
    assert await claim_all(repo) == sorted(free)


async def test_prefix_ranges_end_exactly(repo: Repository) -> None:
    """The lexicographic range of a prefix ends at its successor, multi-byte characters included."""
    top = "\U0010ffff"
    names = ["a", "a" + top, "a" + top + "b", "a" + top + top, "b", "a\uffff", "a\U00010000", "a~"]
    await repo.register([rec(n) for n in names], now=T0, mode=RegisterMode.UPDATE)
    assert await repo.pause(PauseRule("p", "a" + top, True), now=T0) == 3
    assert await claim_all(repo) == sorted(["a", "b", "a\uffff", "a\U00010000", "a~"])
    assert await repo.resume("p", "a" + top, prefix=True, now=T0)
    assert await claim_all(repo, now=LEASE, token="u") == sorted(names)


async def test_whole_parent_and_prefix_rules_combine(repo: Repository) -> None:
    await repo.register([rec("a1"), rec("b1")], now=T0, mode=RegisterMode.UPDATE)
    await repo.pause(PauseRule("p", "a", True), now=T0)
    await repo.pause(PauseRule("p", "", True), now=T0)
    await repo.register([rec("a2"), rec("b2")], now=T0, mode=RegisterMode.UPDATE)
    assert await repo.resume("p", "a", prefix=True, now=T0)
    assert await claim_all(repo) == []  # still held by the whole-parent rule
    await repo.pause(PauseRule("p", "b", True), now=T0)
    assert await repo.resume("p", "", prefix=True, now=T0)
    assert await claim_all(repo) == ["a1", "a2"]
    assert await repo.resume("p", "b", prefix=True, now=T0)
    assert await claim_all(repo) == ["b1", "b2"]
    assert await repo.resume("p", "", prefix=True, now=T0) is False


async def test_control_calls_take_one_round_trip(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    await repo.register([rec(f"n{i}") for i in range(3000)], now=T0, mode=RegisterMode.UPDATE)
    trips = RoundTrips(monkeypatch)
    assert await repo.pause(PauseRule("p", "n1", True), now=T0) == 1111
    assert await repo.pause(PauseRule("p", "", True), now=T0) == 3000
    assert trips.count == 2
    assert len(await repo.pauses("p")) == 2
    assert await repo.resume("p", "", prefix=True, now=T0)
    assert await repo.reschedule("p", "n1", expected=T0, scheduled_at=T0, state="{}", now=T0)
    assert trips.count == 5
    claimed = await repo.claim("p", now=T0, limit=5000, lease_until=LEASE, token="t")
    assert (len(claimed), trips.count) == (3000 - 1111, 6)
    assert await repo.resume("p", "n1", prefix=True, now=T0)
    assert trips.count == 7


async def test_reschedule_compares_a_number_stored_by_hand(
    repo: Repository, admin: redis.asyncio.Redis, namespace: str
) -> None:
    base = f"pyncette:{tag(namespace, 'p')}"
    at = datetime(2031, 6, 30, 23, 59, 59, 123456, tzinfo=timezone.utc)
    await repo.register([rec("a", at=at)], now=T0, mode=RegisterMode.UPDATE)
    await admin.hset(f"{base}:rec", "a", json.dumps({"s": at.timestamp(), "d": "{}"}))
    assert not await repo.reschedule("p", "a", expected=T0, scheduled_at=T0, state=None, now=T0)
    assert await repo.reschedule("p", "a", expected=at, scheduled_at=T0, state=None, now=T0)
    stored = await repo.get("p", "a")
    assert stored is not None and stored.scheduled_at == T0 and stored.spec == "{}"
    # An unreadable record is never rescheduled (its lease cannot be told).
    await repo.corrupt("p", "a")
    assert not await repo.reschedule("p", "a", expected=T0, scheduled_at=T0, state=None, now=T0)


async def test_pause_keeps_a_quarantined_record_quarantined(repo: Repository) -> None:
    await repo.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
    await repo.corrupt("p", "a")
    [bad, good] = sorted(await repo.claim("p", now=T0, limit=10, lease_until=LEASE, token="t"), key=lambda r: r.name)
    assert bad.corrupt is not None and good.corrupt is None
    assert await repo.pause(PauseRule("p", "", False), now=T0) == 0
    assert await repo.pause(PauseRule("p", "a", True), now=T0) == 1
    assert await repo.resume("p", "a", prefix=True, now=T0)
    assert await claim_all(repo, now=LEASE, token="u") == ["b"]  # the quarantined record stays out


async def test_pauses_reads_odd_stored_values(repo: Repository, admin: redis.asyncio.Redis, namespace: str) -> None:
    base = f"pyncette:{tag(namespace, 'p')}"
    await repo.pause(PauseRule("p", "a", True, '{"by": "me"}'), now=T0)
    await admin.hset(f"{base}:pause", mapping={"nb": "not json", "nc": "5", "xforeign": "null"})
    rules = sorted(await repo.pauses("p"), key=lambda r: r.match)
    assert rules == [
        PauseRule("p", "a", True, '{"by": "me"}'),
        PauseRule("p", "b", False, "not json"),
        PauseRule("p", "c", False, "5"),
    ]


async def test_parents_lists_only_the_namespace_with_records(
    repo: Repository, admin: redis.asyncio.Redis, namespace: str, redis_url: str
) -> None:
    parents = ["", "père/{x}", "a:b", "template:1", "z" * 300]
    await repo.register([rec("a", p) for p in parents], now=T0, mode=RegisterMode.UPDATE)
    await repo.register([rec("gone", "empty")], now=T0, mode=RegisterMode.UPDATE)
    await repo.pause(PauseRule("empty", "", True), now=T0)  # rules alone do not make a parent
    assert await repo.delete("empty", "gone")
    await admin.hset(f"pyncette:{{{namespace}:zz}}:rec", "x", "foreign")  # not hex
    other = {"redis_url": redis_url, "redis_namespace": namespace + "x"}
    try:
        async with opened(other) as neighbour:
            await neighbour.register([rec("a", "neighbour")], now=T0, mode=RegisterMode.UPDATE)
            seen: list[str] = []
            token: str | None = None
            while True:
                page, token = await repo.parents(limit=2, continuation=token)
                assert len(page) <= 2
                seen.extend(page)
                if token is None:
                    break
            assert seen == sorted(parents, key=lambda p: p.encode())
            assert await repo.parents(limit=100, continuation=None) == (seen, None)
    finally:
        await purge(other)


async def test_purge_deletes_pause_rules_and_held_records(
    options: dict[str, Any], admin: redis.asyncio.Redis, namespace: str
) -> None:
    async with opened(options) as repo:
        await repo.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
        await repo.pause(PauseRule("p", "a", True), now=T0)
        await repo.pause(PauseRule("p", "", True), now=T0)
        assert len(await admin.keys(f"pyncette:{{{namespace}:*")) == 5
    await purge(options)
    assert await admin.keys(f"pyncette:{{{namespace}:*") == []


async def test_a_store_written_before_pauses_existed_is_paused_in_place(
    options: dict[str, Any], admin: redis.asyncio.Redis, namespace: str
) -> None:
    """The keys exactly as the previous version wrote them (no ``pause`` or ``held`` key): nothing to upgrade,
    pausing works at once and the stored data stays as it was."""
    base = f"pyncette:{tag(namespace, 'p')}"
    later = repr((T0 + timedelta(hours=1)).timestamp())
    old = {
        "a1": json.dumps({"s": NOW_S, "d": '{"v": 1}'}),  # written before the state field
        "a2": json.dumps({"s": NOW_S, "d": '{"v": 2}', "x": '{"n": 2}'}),
        "b": json.dumps({"s": later, "l": later, "t": "old-token", "x": "{}"}),
    }
    await admin.hset(f"{base}:rec", mapping=old)
    await admin.zadd(f"{base}:due", {"a1": T0.timestamp(), "a2": T0.timestamp(), "b": float(later)})
    await admin.zadd(f"{base}:idx", {"a1": 0, "a2": 0, "b": 0})
    async with opened(options) as repo:
        assert await repo.pauses("p") == []
        assert await repo.parents(limit=10, continuation=None) == (["p"], None)
        assert await repo.pause(PauseRule("p", "a", True, '{"note": "upgrade"}'), now=T0) == 2
        assert await repo.claim("p", now=T0, limit=10, lease_until=LEASE, token="t") == []
        a2 = await repo.get("p", "a2")
        assert a2 is not None and (a2.spec, a2.state, a2.scheduled_at) == ('{"v": 2}', '{"n": 2}', T0)
        b = await repo.get("p", "b")
        assert b is not None and (b.locked_by, b.state) == ("old-token", "{}")
        assert await repo.resume("p", "a", prefix=True, now=T0)
        claimed = await repo.claim("p", now=T0, limit=10, lease_until=LEASE, token="t")
        assert [(r.name, r.spec, r.state) for r in sorted(claimed, key=lambda r: r.name)] == [
            ("a1", '{"v": 1}', None),
            ("a2", '{"v": 2}', '{"n": 2}'),
        ]
        assert await repo.commit([Completion("p", "b", "old-token", None)]) == [True]
    stored = await admin.hgetall(f"{base}:rec")
    assert {name: json.loads(value)["d"] for name, value in stored.items()} == {"a1": '{"v": 1}', "a2": '{"v": 2}'}
    assert await admin.exists(f"{base}:held") == 0


async def test_cluster_pauses_and_lists_parents_on_every_node(cluster_url: str, namespace: str) -> None:
    options = {"redis_url": cluster_url, "redis_cluster": True, "redis_namespace": namespace}
    nodes = await cluster_nodes(cluster_url)
    try:
        async with opened(options) as repo:
            parents = [f"template:{i}" for i in range(12)]
            await repo.register([rec(f"n{j}", p) for p in parents for j in range(3)], now=T0, mode=RegisterMode.UPDATE)
            holding = [len(await node.keys(f"pyncette:{{{namespace}:*}}:rec")) for node in nodes]
            assert sum(1 for count in holding if count) >= 2
            found, token = await repo.parents(limit=5, continuation=None)
            while token is not None:
                page, token = await repo.parents(limit=5, continuation=token)
                found += page
            assert sorted(found) == sorted(parents)
            for p in parents:
                assert await repo.pause(PauseRule(p, "n1", False), now=T0) == 1
                assert await repo.pause(PauseRule(p, "n2", True), now=T0) == 1
            claimed = [r for p in parents for r in await repo.claim(p, now=T0, limit=10, lease_until=LEASE, token="t")]
            assert {r.name for r in claimed} == {"n0"} and len(claimed) == 12
            for p in parents:
                assert await repo.resume(p, "n1", prefix=False, now=T0)
            claimed = [r for p in parents for r in await repo.claim(p, now=T0, limit=10, lease_until=LEASE, token="t")]
            assert {r.name for r in claimed} == {"n1"} and len(claimed) == 12
        await purge(options)
        assert [await node.keys(f"pyncette:{{{namespace}:*") for node in nodes] == [[], [], []]
    finally:
        for node in nodes:
            await node.aclose()


# --- wake-ups (pub/sub) ------------------------------------------------------------------------


async def published(subscriber: redis.client.PubSub | Any, quiet: float = 0.3) -> list[str]:
    """The messages received until none arrives for ``quiet`` seconds."""
    found: list[str] = []
    while (message := await subscriber.get_message(ignore_subscribe_messages=True, timeout=quiet)) is not None:
        found.append(message["data"])
    return found


@pytest.fixture
async def subscriber(repo: Repository, admin: redis.asyncio.Redis) -> AsyncIterator[Any]:
    assert isinstance(repo, RedisRepository)
    pubsub = admin.pubsub()
    await pubsub.subscribe(repo.channel)
    try:
        assert await published(pubsub) == []  # subscribed (the confirmation is skipped)
        yield pubsub
    finally:
        await pubsub.aclose()


def at_text(value: datetime) -> str:
    return repr(value.timestamp())


def as_times(texts: list[str]) -> list[datetime]:
    return [datetime.fromtimestamp(float(text), tz=timezone.utc) for text in texts]


async def test_one_hint_per_register_call_and_none_for_lease_writes(repo: Repository, subscriber: Any) -> None:
    soon, later = T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    records = [rec("a", at=later), rec("b", at=soon), rec("c", at=T0)]
    assert all(await repo.register(records, now=T0, mode=RegisterMode.UPDATE))
    assert await published(subscriber) == [at_text(soon)]
    # Written but not moved sooner, or not written at all: no hint.
    assert all(await repo.register(records, now=T0, mode=RegisterMode.UPDATE))
    assert not any(await repo.register(records, now=T0, mode=RegisterMode.CREATE))
    assert await published(subscriber) == []
    # One call per parent: one hint each.
    await repo.register(
        [rec("x", "q1", at=later), rec("y", "q2", at=T0), rec("a", at=T0 - timedelta(days=1))],
        now=T0,
        mode=RegisterMode.UPDATE,
    )
    assert sorted(await published(subscriber)) == sorted([at_text(later), at_text(T0), at_text(T0 - timedelta(days=1))])
    claimed = await repo.claim("p", now=T0, limit=10, lease_until=LEASE, token="t")
    assert len(claimed) == 3
    assert await repo.extend(Lease("p", "a", "t"), lease_until=LEASE + timedelta(seconds=1))
    assert await repo.unlock([Lease("p", "b", "t")]) == [True]
    assert await repo.commit([Completion("p", "a", "t", later), Completion("p", "c", "t", None)]) == [True, True]
    await repo.delete("p", "b")
    assert await published(subscriber) == []


async def test_reschedule_and_resume_hint(repo: Repository, subscriber: Any) -> None:
    later = T0 + timedelta(hours=1)
    await repo.register([rec("a", at=later), rec("b", at=later + timedelta(hours=1))], now=T0, mode=RegisterMode.UPDATE)
    assert await published(subscriber) == [at_text(later)]
    assert await repo.reschedule("p", "a", expected=later, scheduled_at=T0, state=None, now=T0)
    assert await published(subscriber) == [at_text(T0)]
    # Held records: no hint while a rule holds them, one (the earliest released) when it goes.
    await repo.pause(PauseRule("p", "", True, None), now=T0)
    await repo.pause(PauseRule("p", "b", False, None), now=T0)
    await repo.register([rec("b", at=T0 - timedelta(hours=1))], now=T0, mode=RegisterMode.UPDATE)
    assert await published(subscriber) == []
    assert await repo.resume("p", "b", prefix=False, now=T0)
    assert await published(subscriber) == []  # the whole parent is still paused
    # The whole parent resumed: the earliest claimable time in it (a stored score, as Redis writes it).
    assert await repo.resume("p", "", prefix=True, now=T0)
    assert as_times(await published(subscriber)) == [T0 - timedelta(hours=1)]
    await repo.pause(PauseRule("p", "", True, None), now=T0)
    assert await repo.resume("p", "", prefix=True, now=T0)
    assert as_times(await published(subscriber)) == [T0 - timedelta(hours=1)]
    # A prefix rule: the earliest claimable time it released.
    await repo.pause(PauseRule("p", "", True, None), now=T0)
    assert await repo.resume("p", "", prefix=True, now=T0)
    assert len(await published(subscriber)) == 1
    await repo.pause(PauseRule("p", "a", True, None), now=T0)
    assert await repo.resume("p", "a", prefix=True, now=T0)
    assert as_times(await published(subscriber)) == [T0]
    # Nothing resumed, or nothing released: no hint.
    assert not await repo.resume("p", "nothing", prefix=True, now=T0)
    await repo.pause(PauseRule("p", "z", True, None), now=T0)
    assert await repo.resume("p", "z", prefix=True, now=T0)
    assert await published(subscriber) == []


async def test_wakeups_yield_due_times_of_their_namespace_only(options: dict[str, Any], redis_url: str) -> None:
    other = {"redis_url": redis_url, "redis_namespace": options["redis_namespace"] + "x"}
    try:
        async with opened(options) as mine, opened(other) as theirs:
            source = mine.wakeups()
            assert source is not None
            async with source as hints:
                due = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
                await theirs.register([rec("a", at=T0)], now=T0, mode=RegisterMode.UPDATE)
                await mine.register([rec("a", at=due)], now=T0, mode=RegisterMode.UPDATE)
                with anyio.fail_after(5):
                    hint = await anext(aiter(hints))
                assert hint == due and hint.tzinfo is not None
    finally:
        await purge(other)


async def test_kill_connections_cuts_the_wakeup_connection(repo: Repository, admin: redis.asyncio.Redis) -> None:
    assert isinstance(repo, RedisRepository)
    source = repo.wakeups()
    async with source as hints:
        subscribers = [c for c in await admin.client_list(_type="pubsub") if c.get("name") == repo._client_name]
        assert len(subscribers) == 1
        assert await repo.kill_connections() >= 1
        with anyio.fail_after(5), pytest.raises(BackendError):
            await anext(aiter(hints))
    # Closed with the context: nothing of the repository's is left subscribed (the server notices soon).
    with anyio.fail_after(5):
        while [c for c in await admin.client_list(_type="pubsub") if c.get("name") == repo._client_name]:
            await anyio.sleep(0.02)


async def test_cluster_hints_from_every_node_reach_one_subscriber(cluster_url: str, namespace: str) -> None:
    options = {"redis_url": cluster_url, "redis_cluster": True, "redis_namespace": namespace}
    async with opened(options) as repo:
        source = repo.wakeups()
        assert source is not None
        async with source as hints:
            parents = [f"template:{i}" for i in range(6)]
            times = [T0 + timedelta(seconds=i) for i in range(6)]
            await repo.register(
                [rec("a", p, at=t) for p, t in zip(parents, times, strict=True)], now=T0, mode=RegisterMode.UPDATE
            )
            found: list[datetime] = []
            with anyio.fail_after(5):
                async for hint in hints:
                    found.append(hint)
                    if len(found) == len(times):
                        break
            assert sorted(found) == times
    await purge(options)
