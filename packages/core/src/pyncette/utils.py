"""Helpers for task bodies."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import anyio

from .clock import current_clock
from .errors import LeaseLostException
from .model import Context, TaskFunc

logger = logging.getLogger("pyncette")


def with_heartbeat(
    lease_remaining_ratio: float = 0.5, cancel_on_lease_lost: bool = False
) -> Callable[[TaskFunc], TaskFunc]:
    """Keep a long task's lease alive in the background.

    The lease is extended whenever ``lease_remaining_ratio`` of it is left.
    If it is lost, the run will not commit; with ``cancel_on_lease_lost=True``
    the body is also cancelled at once.
    """
    if not 0 < lease_remaining_ratio < 1:
        raise ValueError(f"invalid lease_remaining_ratio {lease_remaining_ratio!r}: must be between 0 and 1")

    def decorator(func: TaskFunc) -> TaskFunc:
        @functools.wraps(func)
        async def wrapper(context: Context) -> None:
            clock = current_clock()
            interval = context.task.lease_duration.total_seconds() * (1 - lease_remaining_ratio)
            lost = False

            async def beat(body_scope: anyio.CancelScope) -> None:
                nonlocal lost
                with clock.busy():
                    while True:
                        await clock.sleep(interval)
                        try:
                            await context.heartbeat()
                        except LeaseLostException:
                            lost = True
                            logger.warning("Heartbeat: lease of %r lost", context.task)
                            if cancel_on_lease_lost:
                                body_scope.cancel()
                            return
                        except Exception as exc:
                            logger.warning("Heartbeat of %r failed, will retry: %s", context.task, exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(beat, tg.cancel_scope)
                await func(context)
                tg.cancel_scope.cancel()
            if lost:
                raise LeaseLostException(context.task)

        return wrapper

    return decorator


__all__ = ["with_heartbeat"]
