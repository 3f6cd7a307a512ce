"""The DynamoDB service for the tests: a real moto server process, or $DYNAMODB_ENDPOINT when set.

moto is started through ``moto_serial_server.py`` (moto's own server, arguments
as for ``python -m moto.server``) so that its conditional writes are atomic
like DynamoDB's; see that file for why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# Dummy credentials for moto / local emulators; real ones in the environment win.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)

STARTUP_TIMEOUT = 30.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """The endpoint URL of a running DynamoDB-compatible server for this test session."""
    configured = os.environ.get("DYNAMODB_ENDPOINT")
    if configured:
        if not _answers(configured):
            _unavailable(f"DynamoDB endpoint {configured} (from DYNAMODB_ENDPOINT) does not answer")
        yield configured
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("moto_serial_server.py")),
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        _unavailable(f"cannot start the moto server: {exc}")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _answers(url):
            if process.poll() is not None:
                _unavailable(f"the moto server exited with status {process.returncode} (is moto[server] installed?)")
            if time.monotonic() > deadline:
                _unavailable(f"the moto server did not answer on {url} within {STARTUP_TIMEOUT:.0f}s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
