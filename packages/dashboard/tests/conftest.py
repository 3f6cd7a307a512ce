"""Services and helpers of the dashboard tests.

The browser tests need Chromium (Debian's ``chromium``: ``/usr/bin/chromium``, or ``$PYNCETTE_CHROMIUM``)
and Playwright for Python (never ``playwright install``). Redis comes from ``REDIS_URL`` (default
redis://127.0.0.1:6379/0). What is missing skips its tests locally and fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
APP = Path(__file__).resolve().parent / "board_app.py"


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(condition, what, timeout=20)``: poll until true, fail at the deadline naming ``what``."""
    return _wait_for


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("PYNCETTE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        unavailable("Chromium is not installed (apt-get install chromium); the browser tests need it")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright (Python) is not installed; the browser tests need it")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_reachable() -> str | None:
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=3):
            return None
    except OSError as exc:
        return f"Redis at {REDIS_URL} is unreachable: {exc}"


class Deployment:
    """The test app's storage, a worker process running it, and a dashboard process serving it."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "runs.log"
        self.log.touch()
        if backend == "sqlite":
            self.options = ["--backend", "sqlite", "-o", f"sqlite_database={workdir / 'tasks.db'}"]
        else:
            self.namespace = "dash" + uuid.uuid4().hex[:10]
            self.options = [
                "--backend",
                "redis",
                "-o",
                f"redis_url={REDIS_URL}",
                "-o",
                f"redis_namespace={self.namespace}",
            ]
        self.backend = backend
        self.token = "tok-" + uuid.uuid4().hex
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {**os.environ, "DASHBOARD_TEST_LOG": str(self.log), "PYNCETTE_DASHBOARD_TOKEN": self.token}
        self.processes: list[subprocess.Popen[bytes]] = []

    def pyncette(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "pyncette", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def tasks(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pyncette", "tasks", str(APP), *args, *self.options],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def runs(self, prefix: str) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if line.startswith(prefix))

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}" for path in self.workdir.glob("*.out")
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def purge(self) -> None:
        if self.backend != "redis":
            return
        import anyio

        from pyncette import backends

        descriptor = backends.load("redis")
        settings = descriptor.settings({"redis_url": REDIS_URL, "redis_namespace": self.namespace})
        anyio.run(descriptor.purge, settings)


@pytest.fixture(params=["sqlite", "redis"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path, chromium: str) -> Iterator[Deployment]:
    """A worker (``pyncette run``) and a dashboard (``pyncette dashboard --actions``), two OS processes."""
    if request.param == "redis" and (reason := _redis_reachable()) is not None:
        unavailable(reason)
    deployed = Deployment(request.param, tmp_path)
    try:
        deployed.tasks("schedule", "remind", "alice", "--arg", "password=hunter2-secret")
        deployed.tasks("schedule", "remind", "bob", "--cron", "*/15 * * * *")
        deployed.pyncette("run", str(APP), *deployed.options, "--log-level", "WARNING", name="worker")
        deployed.pyncette(
            "dashboard", str(APP), *deployed.options, "--bind", f"127.0.0.1:{deployed.port}", "--actions", name="board"
        )
        _wait_for(lambda: deployed.runs("tick") >= 1, "the worker's first run")
        _wait_for(lambda: _listening(deployed.port), "the dashboard to listen")
        yield deployed
    except BaseException:
        print(deployed.output())
        raise
    finally:
        deployed.stop()
        deployed.purge()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()
