"""An HTTP health endpoint for load balancers and orchestrators, with no web framework.

Example::

    from pyncette.healthcheck import use_healthcheck_server

    app = Pyncette(...)
    use_healthcheck_server(app, port=8080)

``GET`` (or ``HEAD``) on any path answers ``200`` while the app is healthy and
``503`` otherwise; other methods get ``405``. Healthy means the scheduler loop
ticked recently (within two poll intervals, and never less than one second)
and the backend answers a cheap read within ``timeout`` seconds. Pass
``healthcheck_handler`` (``async def check(ctx) -> bool``) to decide yourself;
:func:`default_healthcheck` is Pyncette 1.x's check (the loop ticked within two poll intervals).

The server lives as long as the app context (it is a fixture), and its port is
available as ``ctx.healthcheck_port`` (and ``context.healthcheck_port`` in
tasks), which is useful with ``port=0``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import anyio

from ._http import Response, serve_http
from .app import Pyncette
from .runtime import PyncetteContext

logger = logging.getLogger("pyncette")

HealthcheckHandler = Callable[[PyncetteContext], Awaitable[bool]]

#: The fixture (and context attribute) holding the bound port.
PORT_ATTRIBUTE = "healthcheck_port"
#: The smallest allowed age of the last tick, so that a short poll interval does not make the check flap.
MIN_STALENESS = timedelta(seconds=1)
#: The record read to check that the backend answers (it never exists).
PROBE_KEY = ("__healthcheck__/static", "__healthcheck__")


async def default_check(ctx: PyncetteContext) -> tuple[bool, str]:
    """The default health check: the loop ticks and the backend answers. Returns (healthy, reason)."""
    last_tick = ctx.last_tick
    if last_tick is None:
        return False, "the scheduler loop has not ticked yet"
    age = ctx.clock.now() - last_tick
    allowed = max(2 * ctx.description.poll_interval, MIN_STALENESS)
    if age > allowed:
        return False, f"the scheduler loop last ticked {age.total_seconds():.1f} s ago"
    try:
        await ctx.repository.get(*PROBE_KEY)
    except Exception as exc:
        return False, f"the backend does not answer: {type(exc).__name__}: {exc}"
    return True, "ok"


async def default_healthcheck(app_context: PyncetteContext) -> bool:
    """Pyncette 1.x's health check, for ``healthcheck_handler=``: healthy while the scheduler loop last
    ticked less than two poll intervals ago. Unlike the default check, it does not ask the backend."""
    last_tick = app_context.last_tick
    grace = 2 * app_context.description.poll_interval
    return last_tick is not None and app_context.clock.now() - last_tick < grace


async def _evaluate(ctx: PyncetteContext, handler: HealthcheckHandler | None, limit: float) -> tuple[bool, str]:
    try:
        with anyio.fail_after(limit):
            if handler is None:
                return await default_check(ctx)
            healthy = await handler(ctx)
            return bool(healthy), "ok" if healthy else "unhealthy"
    except TimeoutError:
        return False, f"the health check took longer than {limit:g} s"
    except Exception as exc:
        logger.warning("Health check failed: %s: %s", type(exc).__name__, exc)
        return False, f"the health check failed: {type(exc).__name__}: {exc}"


def use_healthcheck_server(
    app: Pyncette,
    port: int = 8080,
    bind_address: str | None = None,
    healthcheck_handler: HealthcheckHandler | None = None,
    *,
    timeout: float = 5.0,
) -> None:
    """Serve the health endpoint on ``bind_address:port`` (all interfaces by default) while the app runs.

    Args:
        app: the app to watch.
        port: the TCP port; ``0`` picks a free one (read it from ``ctx.healthcheck_port``).
        bind_address: the interface to listen on, ``None`` for all.
        healthcheck_handler: ``async def check(ctx) -> bool`` replacing the default check.
        timeout: seconds a check may take before it counts as unhealthy.
    """

    async def healthcheck_fixture(ctx: PyncetteContext) -> AsyncIterator[int]:
        async def handle(method: str, path: str) -> Response:
            if method not in ("GET", "HEAD"):
                return Response(405, b"Method Not Allowed\n", headers=(("Allow", "GET, HEAD"),))
            healthy, reason = await _evaluate(ctx, healthcheck_handler, timeout)
            return Response(200 if healthy else 503, f"{reason}\n".encode())

        async with serve_http(handle, port=port, bind_address=bind_address, what="healthcheck") as bound:
            setattr(ctx, PORT_ATTRIBUTE, bound)
            logger.info("Healthcheck server listening on %s:%d", bind_address or "*", bound)
            yield bound

    app.use_fixture(PORT_ATTRIBUTE, healthcheck_fixture)


__all__ = ["HealthcheckHandler", "default_check", "default_healthcheck", "use_healthcheck_server"]
