"""The dashboard's JSON API on every first-party backend, real servers (moto for DynamoDB): it reads and acts
through the public contract only, so paging, pausing and the problems view behave the same everywhere."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pyncette import Context, Pyncette, backends
from pyncette_conformance.harness import BackendUnderTest
from pyncette_conformance.servers import MotoServer
from pyncette_dashboard import TOKEN_HEADER, dashboard

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

TOKEN = "every-backend-token-0123456789"
ORIGIN = "http://testserver"
SERVERS = {
    "redis": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgres": os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
    "mysql": f"mysql://{os.environ.get('MYSQL_HOST', '127.0.0.1')}:{os.environ.get('MYSQL_PORT', '3306')}",
}
for _name, _value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server backends' drivers are asyncio only


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _check_reachable(name: str) -> None:
    parts = urlsplit(SERVERS[name])
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=3).close()
    except OSError as exc:
        _unavailable(f"{name} at {parts.hostname}:{parts.port} is unreachable: {exc}")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = MotoServer(startup_timeout=30.0)
    try:
        server.start()
    except RuntimeError as exc:
        server.cleanup()
        _unavailable(str(exc))
    try:
        yield server.url
    finally:
        server.cleanup()


def _base_options(name: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if name == "redis":
        return {"redis_url": SERVERS["redis"]}
    if name == "postgres":
        return {"postgres_url": SERVERS["postgres"]}
    if name == "mysql":
        return {
            "mysql_host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
            "mysql_port": int(os.environ.get("MYSQL_PORT", "3306")),
            "mysql_user": os.environ.get("MYSQL_USER", "root"),
            "mysql_password": os.environ.get("MYSQL_PASSWORD", ""),
            "mysql_database": os.environ.get("MYSQL_DATABASE", "test"),
        }
    if name == "dynamodb":
        return {"dynamodb_endpoint": request.getfixturevalue("moto_endpoint"), "dynamodb_region_name": "us-east-1"}
    return {}


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres", "mysql", "dynamodb"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[Pyncette]:
    name = request.param
    if name in SERVERS:
        _check_reachable(name)
    under_test = BackendUnderTest(backends.load(name), base_options=_base_options(name, request))
    pyncette = Pyncette(backend=name, **under_test.isolated_options())

    @pyncette.task(interval=timedelta(hours=1))
    async def tick(context: Context) -> None: ...

    @pyncette.partitioned_task(partition_count=3, interval=timedelta(minutes=30))
    async def sync(context: Context) -> None: ...

    try:
        yield pyncette
    finally:
        await under_test.aclose()


async def test_paging_pausing_and_problems(app: Pyncette) -> None:
    sync = next(t for t in app.tasks if t.name == "sync")
    async with app.create() as ctx:
        names = [f"account-{i:03d}" for i in range(70)]
        await ctx.schedule_tasks(sync, {name: {} for name in names})
        board = dashboard(ctx, actions=True, token=TOKEN)
        headers = {TOKEN_HEADER: TOKEN, "Origin": ORIGIN}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=board), base_url=ORIGIN) as http:
            seen: list[str] = []
            continuation: str | None = None
            for _ in range(20):
                params = {"limit": "25", **({"continuation": continuation} if continuation else {})}
                page = (await http.get("/api/tasks/sync/instances", params=params)).json()
                assert len(page["items"]) <= 25
                seen += [row["instance"] for row in page["items"]]
                continuation = page["continuation"]
                if continuation is None:
                    break
            assert sorted(seen) == names  # every instance once, across the three partitions

            done = await http.post("/api/tasks/sync/pause", json={"prefix": "account-00", "note": "n"}, headers=headers)
            assert done.status_code == 200, done.text
            one = (await http.get("/api/tasks/sync/instance", params={"name": "account-004"})).json()
            assert one["instance"]["paused"]["scope"] == "prefix"
            rows = (await http.get("/api/tasks/sync/instances", params={"limit": "500"})).json()["items"]
            assert sorted(r["instance"] for r in rows if r["paused"]) == names[:10]
            done = await http.post("/api/tasks/sync/resume", json={"prefix": "account-00"}, headers=headers)
            assert done.status_code == 200, done.text

            done = await http.post("/api/tasks/sync/unschedule", json={"instance": "account-069"}, headers=headers)
            assert done.status_code == 200, done.text
            assert await ctx.get_task(sync, "account-069") is None

            problems = (await http.get("/api/problems")).json()
            assert problems["complete"] and problems["items"] == []
            assert problems["scanned"] == 69 + 1  # the instances left and the static task
            overview = (await http.get("/api/overview")).json()
            assert {t["name"] for t in overview["tasks"]} == {"tick", "sync"}
