"""The MariaDB / MySQL service the tests run against.

Settings come from MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD and MYSQL_DATABASE.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiomysql
import pytest

MYSQL_OPTIONS: dict[str, Any] = {
    "mysql_host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
    "mysql_port": int(os.environ.get("MYSQL_PORT", "3306")),
    "mysql_user": os.environ.get("MYSQL_USER", "root"),
    "mysql_password": os.environ.get("MYSQL_PASSWORD", ""),
    "mysql_database": os.environ.get("MYSQL_DATABASE", "test"),
}


def _reachable() -> str | None:
    """None when a TCP connection to the server succeeds, else the reason."""
    host, port = MYSQL_OPTIONS["mysql_host"], MYSQL_OPTIONS["mysql_port"]
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as exc:
        return f"MySQL at {host}:{port} is unreachable: {exc}"


@pytest.fixture(scope="session")
def mysql_options() -> dict[str, Any]:
    """Server options shared by every test; fails in CI and skips elsewhere when the server is down."""
    reason = _reachable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return dict(MYSQL_OPTIONS)


@pytest.fixture
async def raw_connection(mysql_options: dict[str, Any]) -> AsyncIterator[Any]:
    """A plain autocommit connection beside the backend's pool, for inspecting and interfering."""
    conn = await aiomysql.connect(
        host=mysql_options["mysql_host"],
        port=mysql_options["mysql_port"],
        user=mysql_options["mysql_user"],
        password=mysql_options["mysql_password"],
        db=mysql_options["mysql_database"],
        charset="utf8mb4",
        autocommit=True,
    )
    try:
        yield conn
    finally:
        conn.close()
