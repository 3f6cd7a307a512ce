"""Pyncette 1.x's executors, kept so that ``Pyncette(executor_cls=...)`` works unchanged.

Pass the class, not an instance: ``Pyncette(executor_cls=SynchronousExecutor)``. The runtime does not
call the executor; it reads the choice:

* :class:`DefaultExecutor` (the default): up to ``concurrency_limit`` task bodies run at once.
* :class:`SynchronousExecutor`: one task body at a time. The app claims a run only when no other body
  is running, so a waiting run's lease does not tick away before it starts.

Other executor classes are refused (:class:`~pyncette.errors.ConfigurationError`): the runtime could
not honour what they do.

Both classes still work on their own as in 1.x: async context managers whose ``spawn_task(awaitable)``
runs the awaitable (inline, or in the background up to ``concurrency_limit`` at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

from .errors import ConfigurationError
from .redaction import get_logger

logger = get_logger("pyncette")


class SynchronousExecutor:
    """Runs each spawned awaitable to completion before ``spawn_task`` returns: one task body at a time."""

    def __init__(self, **options: Any) -> None:
        pass  # 1.x passed every app option here and used none

    async def __aenter__(self) -> SynchronousExecutor:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def spawn_task(self, task: Awaitable[Any]) -> None:
        """Run ``task`` now and return when it is done."""
        await task


class DefaultExecutor:
    """Runs spawned awaitables in the background, at most ``concurrency_limit`` (default 100) at once.

    ``spawn_task`` waits for a free place. Leaving the context waits for what still runs; if the
    block was cancelled, what still runs is cancelled first.
    """

    def __init__(self, **options: Any) -> None:
        self._limit = asyncio.Semaphore(options.get("concurrency_limit", 100))
        self._running: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> DefaultExecutor:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._running:
            return
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            logger.warning("Cancelling %d running task(s)", len(self._running))
            for running in self._running:
                running.cancel()
        await asyncio.wait(set(self._running))

    async def spawn_task(self, task: Awaitable[Any]) -> None:
        """Start ``task`` in the background once fewer than ``concurrency_limit`` run."""
        await self._limit.acquire()

        async def guarded() -> None:
            try:
                await task
            finally:
                self._limit.release()

        running = asyncio.ensure_future(guarded())
        self._running.add(running)
        running.add_done_callback(self._running.discard)


#: The executor classes ``Pyncette(executor_cls=...)`` accepts.
EXECUTORS = (DefaultExecutor, SynchronousExecutor)


def body_limit(executor_cls: object) -> int | None:
    """The most task bodies ``executor_cls`` lets run at once (``None``: no limit of its own).

    A subclass counts as its base only if it keeps the base's ``spawn_task``; otherwise what it does
    would be ignored, so it is refused like any other class.
    """
    for base, limit in ((SynchronousExecutor, 1), (DefaultExecutor, None)):
        if isinstance(executor_cls, type) and issubclass(executor_cls, base):
            if executor_cls.spawn_task is base.spawn_task:
                return limit
            break
    raise ConfigurationError(
        f"unsupported executor_cls {executor_cls!r}: Pyncette 2 runs task bodies itself and honours only "
        "pyncette.executor.DefaultExecutor (bodies run concurrently, up to concurrency_limit) and "
        "pyncette.executor.SynchronousExecutor (one body at a time)"
    )


__all__ = ["DefaultExecutor", "SynchronousExecutor"]
