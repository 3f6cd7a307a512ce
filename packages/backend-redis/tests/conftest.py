"""The Redis service the tests run against: ``REDIS_URL`` (default redis://127.0.0.1:6379/0)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

from pyncette_conformance.servers import RedisServer, ServerUnavailable

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> str | None:
    """None when a TCP connection to the server succeeds, else the reason."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as exc:
        return f"Redis at {host}:{port} is unreachable: {exc}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The server URL; fails in CI and skips elsewhere when the server is down."""
    reason = _reachable(REDIS_URL)
    if reason is not None:
        _unavailable(reason)
    return REDIS_URL


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _server(directory: Path, **options: Any) -> RedisServer:
    try:
        return RedisServer(directory, **options)
    except ServerUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private standalone server with AOF on, so its data survives a restart."""
    with _server(tmp_path / "standalone") as server:
        yield server


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private three-primary Redis Cluster; yields the URL of one node."""
    root = tmp_path_factory.mktemp("cluster")
    cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    nodes = [_server(root / str(i), appendonly=False, extra=cluster) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        cli = shutil.which("redis-cli") or os.path.join(os.path.dirname(nodes[0].binary), "redis-cli")
        create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 60
        while True:
            states = [
                subprocess.run(
                    [cli, "-p", str(node.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                ).stdout
                for node in nodes
            ]
            if all("cluster_state:ok" in state for state in states):
                break
            assert time.monotonic() < deadline, f"cluster did not become ready: {states}"
            time.sleep(0.1)
        yield nodes[0].url
    finally:
        for node in nodes:
            node.cleanup()
