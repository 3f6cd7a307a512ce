"""The DynamoDB service for the tests: a real moto server process, or $DYNAMODB_ENDPOINT when set.

moto runs as :class:`pyncette_conformance.servers.MotoServer`: moto's own server, handling one request
at a time so that its conditional writes are atomic like DynamoDB's (see
:func:`~pyncette_conformance.servers.serve_moto_one_request_at_a_time` for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from pyncette_conformance.servers import MotoServer, answers

# Dummy credentials for moto / local emulators; real ones in the environment win.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)

STARTUP_TIMEOUT = 30.0


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """The endpoint URL of a running DynamoDB-compatible server for this test session."""
    configured = os.environ.get("DYNAMODB_ENDPOINT")
    if configured:
        if not answers(configured):
            _unavailable(f"DynamoDB endpoint {configured} (from DYNAMODB_ENDPOINT) does not answer")
        yield configured
        return
    server = MotoServer(startup_timeout=STARTUP_TIMEOUT)
    try:
        server.start()
    except RuntimeError as exc:
        server.cleanup()
        _unavailable(str(exc))
    try:
        yield server.url
    finally:
        server.cleanup()


class CuttingProxy:
    """A TCP proxy in front of the server, for fault injection.

    :meth:`cut` aborts every connection through it at once; with ``reject`` set, new connections are
    accepted and cut immediately; ``drop_replies = n`` aborts the connections of the next ``n`` replies
    instead of passing them on (the server has acted on the request, the client never hears of it);
    while ``holding`` is set, replies wait in the proxy (``held`` counts them) until it is cleared.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.reject = False
        self.drop_replies = 0
        self.held = 0
        self._release = asyncio.Event()
        self._release.set()

    @property
    def holding(self) -> bool:
        return not self._release.is_set()

    @holding.setter
    def holding(self, value: bool) -> None:
        if value:
            self._release.clear()
        else:
            self._release.set()

    async def start(self) -> None:
        """Listen (again on the same port after :meth:`stop`)."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.holding = False
        if self.server is not None:
            self.server.close()
            self.cut()
            await self.server.wait_closed()

    def cut(self) -> int:
        """Abort every open connection (client and server side); returns how many client connections."""
        clients = len(self.writers) // 2
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        return clients

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.reject:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, replies: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    if replies and self.holding:
                        self.held += 1
                        await self._release.wait()
                    if replies and self.drop_replies > 0:
                        self.drop_replies -= 1
                        sink.transport.abort()
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(Exception):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, replies=False), pipe(up_reader, writer, replies=True))
        self.writers.discard(writer)
        self.writers.discard(up_writer)


@pytest.fixture
async def keepalive_front(dynamodb_endpoint: str) -> AsyncIterator[str]:
    """An HTTP/1.1 keep-alive reverse proxy in front of the server; yields its URL.

    moto's server closes every connection after one response; DynamoDB keeps them open, and the
    client pools them. Tests about pooled connections go through this.
    """
    hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop | {"host"}}
        async with session.request(
            request.method, dynamodb_endpoint + request.path_qs, headers=headers, data=await request.read()
        ) as reply:
            body = await reply.read()
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in hop_by_hop}
            return web.Response(status=reply.status, headers=kept, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


@pytest.fixture
def private_moto() -> Iterator[MotoServer]:
    """A moto server of this test's own, to kill, hang and restart (never the shared one)."""
    if os.environ.get("DYNAMODB_ENDPOINT"):
        pytest.skip("DYNAMODB_ENDPOINT is set: this test needs a moto server of its own")
    server = MotoServer(startup_timeout=STARTUP_TIMEOUT)
    try:
        server.start()
    except RuntimeError as exc:
        server.cleanup()
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def cutting_proxy(dynamodb_endpoint: str) -> AsyncIterator[CuttingProxy]:
    parts = urlsplit(dynamodb_endpoint)
    server = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 80)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
