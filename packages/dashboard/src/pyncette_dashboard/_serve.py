"""Serving the dashboard with uvicorn: on its own (``pyncette dashboard``) or beside a running app
(``pyncette run --dashboard``)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Literal

import anyio
import uvicorn

from pyncette.errors import ConfigurationError
from pyncette.redaction import get_logger

from ._app import Dashboard

logger = get_logger("pyncette.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def parse_bind(text: str | None) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT``, ``HOST`` or ``:PORT`` (loopback and 8765 where left out)."""
    if text is None or not text.strip():
        return DEFAULT_HOST, DEFAULT_PORT
    value = text.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    elif value.isdigit():
        host, port_text = "", value
    else:
        host, port_text = value, ""
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        port = -1
    if not 0 <= port <= 65535 or not (host or DEFAULT_HOST).strip():
        raise ConfigurationError(f"invalid bind address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host or DEFAULT_HOST, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; :class:`ConfigurationError` naming the address when that fails."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: a response written in two parts must not wait for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from None
    if not is_loopback(host):
        logger.warning("The dashboard listens on %s:%d, beyond this machine: put authentication in front", host, port)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _config(board: Dashboard, *, lifespan: Literal["on", "off"]) -> uvicorn.Config:
    return uvicorn.Config(board, lifespan=lifespan, log_level="warning", access_log=False, server_header=False)


def run(board: Dashboard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve ``board`` until SIGINT/SIGTERM (its lifespan opens and closes the app's storage)."""
    sock = bind(host, port)
    logger.info("Dashboard on %s", address(sock))
    uvicorn.Server(_config(board, lifespan="on")).run(sockets=[sock])


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves signals to the Pyncette process it runs in."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_alongside(board: Dashboard, sock: socket.socket) -> None:
    """Serve ``board`` on ``sock`` (asyncio) until cancelled; then close its connections and return."""
    server = _Embedded(_config(board, lifespan="off"))
    logger.info("Dashboard on %s", address(sock))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    finally:
        server.should_exit = True
        server.force_exit = True
        with anyio.CancelScope(shield=True):
            await task


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "bind", "is_loopback", "parse_bind", "run", "serve_alongside"]
