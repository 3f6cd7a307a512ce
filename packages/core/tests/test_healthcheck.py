"""The health endpoint, over a real socket (port 0)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from pyncette import Context, Pyncette, PyncetteContext
from pyncette.abc import Completion, Lease, Record, RegisterMode, Repository
from pyncette.errors import BackendError
from pyncette.healthcheck import use_healthcheck_server
from pyncette.testing import VirtualClock, running

pytestmark = [pytest.mark.anyio, pytest.mark.realtime]


class Switchable(Repository):
    """Delegates to the real repository, or raises BackendError on every call while ``down``."""

    def __init__(self, inner: Repository) -> None:
        self.inner = inner
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise BackendError("simulated outage")

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        self._check()
        return await self.inner.register(records, now=now, mode=mode)

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        self._check()
        return await self.inner.claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        self._check()
        return await self.inner.commit(completions)

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        self._check()
        return await self.inner.unlock(leases)

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        self._check()
        return await self.inner.extend(lease, lease_until=lease_until)

    async def delete(self, parent: str, name: str) -> bool:
        self._check()
        return await self.inner.delete(parent, name)

    async def get(self, parent: str, name: str) -> Record | None:
        self._check()
        return await self.inner.get(parent, name)

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        self._check()
        return await self.inner.list_page(parent, limit=limit, continuation=continuation)


async def http(port: int, method: str = "GET", body: bytes = b"", raw: bytes | None = None) -> tuple[int, str, str]:
    """One request; returns (status, head, body)."""
    request = raw or (
        f"{method} /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head, _, content = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), head, content


def make_app(**kwargs: Any) -> tuple[Pyncette, list[Switchable]]:
    app = Pyncette(poll_interval=timedelta(milliseconds=100))
    wrappers: list[Switchable] = []

    def wrap(repository: Repository) -> Repository:
        wrappers.append(Switchable(repository))
        return wrappers[-1]

    app.use_repository_wrapper(wrap)
    use_healthcheck_server(app, port=0, bind_address="127.0.0.1", **kwargs)

    @app.task(interval=timedelta(milliseconds=200))
    async def work(context: Context) -> None:
        pass

    return app, wrappers


def port_of(ctx: PyncetteContext) -> int:
    port: int = ctx.healthcheck_port  # type: ignore[attr-defined]
    return port


async def wait_for_status(port: int, expected: int, seconds: float = 5) -> tuple[int, str, str]:
    with anyio.fail_after(seconds):
        while True:
            response = await http(port)
            if response[0] == expected:
                return response
            await anyio.sleep(0.05)


async def test_ok_while_running_and_unavailable_before() -> None:
    app, _ = make_app()
    async with app.create() as ctx:
        status, _, body = await http(port_of(ctx))
        assert (status, body) == (503, "the scheduler loop has not ticked yet\n")
        async with running(ctx):
            status, head, body = await wait_for_status(port_of(ctx), 200)
            assert body == "ok\n"
            assert "Content-Type: text/plain" in head
            assert "Connection: close" in head


async def test_unavailable_while_backend_is_down() -> None:
    app, wrappers = make_app()
    async with app.create() as ctx, running(ctx):
        port = port_of(ctx)
        await wait_for_status(port, 200)
        wrappers[0].down = True
        status, _, body = await http(port)
        assert status == 503
        assert "backend does not answer: BackendError: simulated outage" in body
        wrappers[0].down = False
        await wait_for_status(port, 200)


async def test_unavailable_when_loop_stops_ticking() -> None:
    clock = VirtualClock()
    app, _ = make_app()
    async with app.create(clock=clock) as ctx:
        async with running(ctx):
            await clock.advance(1)
            assert (await http(port_of(ctx)))[0] == 200
        # The loop has stopped; once two poll intervals (at least a second) pass, it is unhealthy.
        await clock.advance(0.5)
        assert (await http(port_of(ctx)))[0] == 200
        await clock.advance(1)
        status, _, body = await http(port_of(ctx))
        assert status == 503
        assert "the scheduler loop last ticked" in body


async def test_other_methods_get_405_and_head_has_no_body() -> None:
    app, _ = make_app()
    async with app.create() as ctx, running(ctx):
        port = port_of(ctx)
        await wait_for_status(port, 200)
        status, head, _ = await http(port, "POST", body=b'{"some": "payload"}')
        assert status == 405
        assert "Allow: GET, HEAD" in head
        assert (await http(port, "DELETE"))[0] == 405
        status, head, body = await http(port, "HEAD")
        assert status == 200
        assert "Content-Length: 3" in head
        assert body == ""
        assert (await http(port, raw=b"nonsense\r\n\r\n"))[0] == 400


async def test_custom_handler_decides() -> None:
    verdicts: list[bool | Exception] = [True, False, RuntimeError("boom")]

    async def handler(ctx: PyncetteContext) -> bool:
        verdict = verdicts.pop(0)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    app, _ = make_app(healthcheck_handler=handler)
    async with app.create() as ctx:
        port = port_of(ctx)
        assert (await http(port))[:3:2] == (200, "ok\n")  # not running: the handler alone decides
        assert (await http(port))[:3:2] == (503, "unhealthy\n")
        status, _, body = await http(port)
        assert status == 503
        assert "RuntimeError: boom" in body


async def test_slow_check_times_out() -> None:
    async def handler(ctx: PyncetteContext) -> bool:
        await anyio.sleep(10)
        return True

    app, _ = make_app(healthcheck_handler=handler, timeout=0.1)
    async with app.create() as ctx:
        status, _, body = await http(port_of(ctx))
        assert status == 503
        assert "longer than 0.1 s" in body


async def test_server_lives_as_long_as_the_app_context() -> None:
    app, _ = make_app()
    async with app.create() as ctx:
        port = port_of(ctx)
        assert (await http(port))[0] == 503
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


async def test_errors_in_the_app_context_propagate_unchanged() -> None:
    app, _ = make_app()
    with pytest.raises(KeyError):
        async with app.create():
            raise KeyError("mine")
