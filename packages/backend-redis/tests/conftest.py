"""The Redis service the tests run against: ``REDIS_URL`` (default redis://127.0.0.1:6379/0)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

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
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return REDIS_URL


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server binary not found (needed for private test servers)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def _free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


class ServerProcess:
    """A redis-server of our own on a free port, started and stopped by the tests."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.port = _free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.extra = directory, extra
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False

    @property
    def command(self) -> list[str]:
        command = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir"]
        return [*command, str(self.directory), "--daemonize", "no", "--protected-mode", "no", *self.extra]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) the server and wait until it accepts connections."""
        for _ in range(3):
            if self._start_once():
                self.started = True
                return
            if self.started:
                break
            # Another process took the free port before the server bound it: the first start may move.
            self.port = _free_port()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def _start_once(self) -> bool:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        self.kill()
        return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no final save (acknowledged writes are in the AOF already)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A private standalone server with AOF on, so its data survives a restart."""
    server = ServerProcess(tmp_path / "standalone", "--appendonly", "yes")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private three-primary Redis Cluster; yields the URL of one node."""
    root = tmp_path_factory.mktemp("cluster")
    nodes = [
        ServerProcess(root / str(i), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        for i in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        cli = shutil.which("redis-cli") or os.path.join(os.path.dirname(redis_binary()), "redis-cli")
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
            node.stop()
