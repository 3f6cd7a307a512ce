"""A tiny HTTP/1.1 server on anyio sockets, enough for the health and metrics endpoints.

Every response closes its connection. Request bodies are read and ignored. It
runs on asyncio and trio alike and needs no web framework.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import anyio
from anyio.abc import SocketAttribute, SocketStream

from .errors import ConfigurationError

logger = logging.getLogger("pyncette")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class Response:
    """What a handler returns."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


#: ``handler(method, path) -> Response``
Handler = Callable[[str, str], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _encode(response: Response, *, head_only: bool) -> bytes:
    phrase = HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


async def _read_request(stream: SocketStream) -> tuple[str, str]:
    """Read the request line and headers (and discard a small body); return (method, path)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer and b"\n\n" not in buffer:
        if len(buffer) > MAX_HEAD_BYTES:
            raise _BadRequest(431)
        buffer += await stream.receive(4096)
    separator = b"\r\n\r\n" if b"\r\n\r\n" in buffer else b"\n\n"
    head, _, body = buffer.partition(separator)
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split() if lines else []
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise _BadRequest(400) from None
    if length > MAX_BODY_BYTES:
        raise _BadRequest(413)
    # Read the body before answering: closing a socket with unread input resets the connection.
    while len(body) < length:
        body += await stream.receive(4096)
    method, target = parts[0], parts[1]
    return method.upper(), target.split("?", 1)[0]


async def _serve_connection(stream: SocketStream, handler: Handler, what: str) -> None:
    async with stream:
        method = ""
        try:
            with anyio.fail_after(READ_TIMEOUT):
                method, path = await _read_request(stream)
            response = await handler(method, path)
        except _BadRequest as exc:
            response = Response(exc.status, f"{HTTPStatus(exc.status).phrase}\n".encode())
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
        except Exception:
            logger.exception("%s server: request handler failed", what)
            response = Response(500, b"Internal Server Error\n")
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stream.send(_encode(response, head_only=method == "HEAD"))


@contextlib.asynccontextmanager
async def serve_http(handler: Handler, *, port: int, bind_address: str | None, what: str) -> AsyncIterator[int]:
    """Serve ``handler`` on ``bind_address:port`` (all interfaces when ``None``) for the block; yields the port.

    The server never takes the block down with it: its own failures are logged, and an
    exception leaving the block propagates unchanged.
    """
    try:
        listener = await anyio.create_tcp_listener(local_host=bind_address, local_port=port)
    except OSError as exc:
        where = f"{bind_address or '*'}:{port}"
        raise ConfigurationError(
            f"cannot serve the {what} endpoint on {where}: {exc.strerror or exc}; every process needs its own "
            "port= (or port=0 for a free one)"
        ) from exc
    bound: int = listener.extra(SocketAttribute.local_port)  # noqa: S610 - not Django

    async def accept_forever() -> None:
        try:
            await listener.serve(lambda stream: _serve_connection(stream, handler, what))
        except Exception:
            logger.exception("%s server on port %d stopped", what, bound)

    error: Exception | None = None
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(accept_forever)
        try:
            yield bound
        except Exception as exc:
            # Re-raised below, so the task group does not wrap it in an exception group.
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error


__all__ = ["Handler", "Response", "serve_http"]
