"""The private throwaway servers: started on a free loopback port, killed, restarted on the same port with
their data (moto excepted: it keeps nothing), cleaned up. Real processes; skipped where a server program
is missing (failed under ``CI=true``)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest

from pyncette import backends
from pyncette.abc import Record, RegisterMode
from pyncette_conformance.servers import (
    MariaDBServer,
    MotoServer,
    PostgresServer,
    PrivateServer,
    RedisServer,
    ServerUnavailable,
    free_port,
)

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(120)]

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)

# moto accepts any credentials.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)


def _options(server: PrivateServer) -> tuple[str, dict[str, Any]]:
    """The backend that stores in ``server``, and its options."""
    if isinstance(server, RedisServer):
        return "redis", {"redis_url": server.url, "redis_namespace": "servers"}
    if isinstance(server, PostgresServer):
        return "postgres", {"postgres_url": server.url}
    if isinstance(server, MariaDBServer):
        return "mysql", {
            "mysql_host": "127.0.0.1",
            "mysql_port": server.port,
            "mysql_user": "root",
            "mysql_database": "test",
        }
    assert isinstance(server, MotoServer)
    return "dynamodb", {
        "dynamodb_endpoint": server.url,
        "dynamodb_region_name": "us-east-1",
        "dynamodb_table_name": "servers",
    }


async def _write(server: PrivateServer) -> None:
    name, options = _options(server)
    backend = backends.load(name)
    async with backend.open(backend.settings(options)) as repository:
        record = Record("p", "kept", "{}", T0)
        assert await repository.register([record], now=T0, mode=RegisterMode.CREATE) == [True]


async def _read(server: PrivateServer) -> bool:
    name, options = _options(server)
    backend = backends.load(name)
    async with backend.open(backend.settings(options)) as repository:
        return await repository.get("p", "kept") is not None


def _server(factory: Callable[[], PrivateServer]) -> PrivateServer:
    try:
        return factory()
    except ServerUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.mark.parametrize(
    ("factory", "keeps_data"),
    [(RedisServer, True), (PostgresServer, True), (MariaDBServer, True), (MotoServer, False)],
    ids=["redis", "postgres", "mariadb", "moto"],
)
def test_kill_and_restart_on_the_same_port(factory: Callable[[], PrivateServer], keeps_data: bool) -> None:
    server = _server(factory)
    with server:
        port, directory = server.port, server.directory
        assert server.running and server.ready()
        anyio.run(_write, server, backend="asyncio")
        server.kill()
        assert not server.running and not server.ready()
        server.start()
        assert server.port == port and server.ready()
        assert anyio.run(_read, server, backend="asyncio") is keeps_data
    assert not server.running
    assert not directory.exists(), "cleanup leaves the temporary directory behind"


def test_stop_is_graceful_and_a_stopped_server_restarts() -> None:
    server = _server(RedisServer)
    with server:
        anyio.run(_write, server, backend="asyncio")
        server.stop()
        assert not server.running
        server.restart()
        assert anyio.run(_read, server, backend="asyncio")


def test_a_hung_moto_server_can_still_be_cleaned_up() -> None:
    server = _server(MotoServer)
    with server:
        server.signal(signal.SIGSTOP)
        assert not server.ready()
    assert not server.running


def test_missing_programs_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerUnavailable, match="redis-server"):
        RedisServer()


def test_free_port_with_a_companion() -> None:
    port = free_port(companion_offset=10000)
    assert 0 < port <= 55535
