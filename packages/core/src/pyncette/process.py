"""Running an app as a process: logging, signals, exit statuses (``app.main()`` and ``pyncette run``)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TextIO

import anyio

from .errors import ForcedShutdown, PyncetteException, leaf_exception
from .redaction import RedactingFilter, get_logger, redact
from .runtime import PyncetteContext

logger = get_logger("pyncette")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, stream: TextIO = sys.stdout) -> None:
    """Log to ``stream`` at ``level``, through the redacting filter (no secret in any line)."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, handlers=[handler])


def main(run: Callable[[], Awaitable[None]]) -> None:
    """``app.main()`` (see :meth:`pyncette.Pyncette.main`): ``run`` is the app's ``run_until_signalled``."""
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        anyio.run(run)
    except Exception as exc:
        leaf = leaf_exception(exc)
        if not isinstance(leaf, PyncetteException):
            raise
        print(f"pyncette: error: {redact(' '.join(str(leaf).split()))}", file=sys.stderr)
        sys.exit(1)


async def run_until_signalled(
    create: Callable[[], AbstractAsyncContextManager[PyncetteContext]],
    seconds: float | None = None,
    alongside: Callable[[PyncetteContext], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run the app ``create()`` opens until SIGINT/SIGTERM (or ``seconds`` elapse): the first stops
    gracefully, the second cancels running tasks and makes this raise :class:`~pyncette.errors.ForcedShutdown`.

    ``alongside(ctx)`` (the dashboard of ``pyncette run --dashboard``) runs beside the app from when its
    context is open, and is cancelled once the app has stopped.
    """
    async with create() as ctx, anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if ctx.shutting_down:
                        logger.warning("Second %s: cancelling running tasks", signal.Signals(signum).name)
                        ctx.cancel()
                        return
                    logger.info("%s received: shutting down gracefully", signal.Signals(signum).name)
                    ctx.shutdown()

        async def stop_later(delay: float) -> None:
            await anyio.sleep(delay)
            ctx.shutdown()

        tg.start_soon(watch_signals)
        if alongside is not None:
            tg.start_soon(alongside, ctx)
        if seconds is not None:
            tg.start_soon(stop_later, seconds)
        await ctx.run()
        tg.cancel_scope.cancel()
    if ctx.cancelled:
        raise ForcedShutdown("stopped by a second signal: running tasks were cancelled")


__all__ = ["configure_logging", "main", "run_until_signalled"]
