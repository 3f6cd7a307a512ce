"""Shared fixtures: the PostgreSQL server under test (a real one, never a mock), and private throwaway servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import asyncpg
import pytest

from pyncette_conformance.servers import PostgresServer, ServerUnavailable

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def _unavailable(reason: str) -> NoReturn:
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


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A started private server (see :class:`~pyncette_conformance.servers.PostgresServer`), deleted after the test."""
    try:
        server = PostgresServer()
    except ServerUnavailable as exc:
        _unavailable(f"cannot start a private PostgreSQL server: {exc}")
    try:
        server.start()
    except RuntimeError as exc:
        server.cleanup()
        _unavailable(f"cannot start a private PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.cleanup()
