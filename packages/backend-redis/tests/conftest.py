"""The Redis service the tests run against: ``REDIS_URL`` (default redis://127.0.0.1:6379/0)."""

from __future__ import annotations

import os
import socket
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
