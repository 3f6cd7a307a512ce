"""The worker pool: a few long-lived tasks that take claimed runs from a queue (cheaper than a task per run)."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from ..redaction import get_logger

logger = get_logger("pyncette")

R = TypeVar("R")


class WorkerPool(Generic[R]):
    """Runs ``execute(item)`` for every queued item, on as many workers as items wait at once.

    Only one wake-up is outstanding at a time: the woken worker wakes the next when it takes an item
    and more are queued. Items that never wait are then all done by one worker, and items that do wait
    still each get a worker of their own, one event-loop step apart.
    """

    def __init__(self, tg: TaskGroup, execute: Callable[[R], Awaitable[None]]) -> None:
        self._tg = tg
        self._execute = execute
        self._queue: deque[R] = deque()
        self._idle: list[anyio.Event] = []
        self._waking = False

    def start(self, item: R) -> None:
        """Queue an item; a worker picks it up soon."""
        self._queue.append(item)
        if not self._waking:
            self._wake_one()

    def _wake_one(self) -> None:
        self._waking = True
        if self._idle:
            self._idle.pop().set()
        else:
            self._tg.start_soon(self._worker)

    async def _worker(self) -> None:
        while True:
            self._waking = False
            while self._queue:
                item = self._queue.popleft()
                if self._queue and not self._waking:
                    self._wake_one()  # takes the next item if this one waits
                try:
                    await self._execute(item)
                except Exception:  # a bug, never fatal to the pool
                    logger.exception("Internal error while running %r", item)
            wake = anyio.Event()
            self._idle.append(wake)
            await wake.wait()


__all__ = ["WorkerPool"]
