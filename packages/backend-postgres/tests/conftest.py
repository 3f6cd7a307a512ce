"""Shared fixtures: the PostgreSQL server under test (a real one, never a mock), and private throwaway servers."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def _unavailable(reason: str) -> None:
    """Fail under CI (every test must run there), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


async def _probe(url: str) -> None:
    connection = await asyncpg.connect(url, timeout=3)
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The server URL, after checking it answers; fails in CI, skips elsewhere."""
    try:
        asyncio.run(_probe(POSTGRES_URL))
    except Exception as exc:
        _unavailable(f"PostgreSQL not reachable at POSTGRES_URL={POSTGRES_URL}: {type(exc).__name__}: {exc}")
    return POSTGRES_URL


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for inspecting and tampering with the server from the outside."""
    connection = await asyncpg.connect(postgres_url, timeout=5)
    try:
        yield connection
    finally:
        await connection.close()


# --- a private server that tests may kill ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    """PIDs of the live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name is in parentheses and may contain spaces: split after the last ')'.
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(Path(stat).parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie holds no resources; its new parent reaps it (or not) later


class PrivateServer:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port, trust auth.

    Only tests may use it, and they may kill it: nothing else connects to it. As root, the server
    programs run as the ``postgres`` OS user (they refuse to run as root).
    """

    def __init__(self, bindir: Path, base: Path, run_as: list[str]) -> None:
        self.bindir, self.base, self.run_as = bindir, base, run_as
        self.data = base / "data"
        self.log = base / "server.log"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self.run_as, *args], cwd=self.base, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self, timeout: float = 20.0) -> None:
        """Start the postmaster (crash recovery included) and wait until it accepts connections."""
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.base),
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "50",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([*self.run_as, *args], cwd=self.base, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private PostgreSQL did not start; its log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster, as a crash would, and wait until its processes are gone."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        children = _children(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout)
        # Orphaned backends notice the postmaster's death and exit by themselves; a new postmaster
        # refuses to start while any of them still holds the shared memory.
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        self.process = None

    def stop(self) -> None:
        """Shut down (fast mode), or kill when that takes too long."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None


def _run_as_for_server() -> list[str]:
    """How to run the server programs: directly, or (as root) as the ``postgres`` user via ``setpriv``."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root and there is no 'postgres' OS user to run a private PostgreSQL server as")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        _unavailable("running as root and setpriv is missing: cannot run a private PostgreSQL server as 'postgres'")
    return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    """A started private server, stopped and deleted after the test."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not bins:
        _unavailable("no PostgreSQL server programs (/usr/lib/postgresql/*/bin/initdb) to start a private server")
    run_as = _run_as_for_server()
    base = Path(tempfile.mkdtemp(prefix="pyncette-pg-"))
    try:
        if run_as:
            user = pwd.getpwnam("postgres")
            os.chown(base, user.pw_uid, user.pw_gid)
        server = PrivateServer(Path(bins[-1]).parent, base, run_as)
        try:
            server.initdb()
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            server.stop()
            _unavailable(f"cannot start a private PostgreSQL server: {exc}")
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
