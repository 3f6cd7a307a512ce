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
    """Keep a long task's lease alive in the background, as Pyncette 1.x does.

    The lease is extended every ``lease_duration * lease_remaining_ratio`` seconds. A heartbeat that
    fails for another reason (storage unreachable) is logged and tried again at the next beat. Once
    the lease is lost, heartbeats stop and the run will not be committed; the body goes on unless
    ``cancel_on_lease_lost=True``, which cancels it. Either way the wrapper then returns normally
    (no :class:`~pyncette.errors.LeaseLostException`); an exception of the body propagates unchanged.
    """
    if not 0 < lease_remaining_ratio < 1:
        raise ValueError(f"invalid lease_remaining_ratio {lease_remaining_ratio!r}: must be between 0 and 1")

    def decorator(func: TaskFunc) -> TaskFunc:
        @functools.wraps(func)
        async def wrapper(context: Context) -> None:
            clock = current_clock()
            interval = context.task.lease_duration.total_seconds() * lease_remaining_ratio

            async def beat(body: anyio.CancelScope) -> None:
                with clock.busy():
                    while True:
                        await clock.sleep(interval)
                        try:
                            # Shielded: a beat in flight completes even when the body ends meanwhile.
                            with anyio.CancelScope(shield=True):
                                await context.heartbeat()
                        except LeaseLostException:
                            logger.warning("Heartbeat: lease of %r lost", context.task)
                            if cancel_on_lease_lost:
                                body.cancel()
                            return
                        except Exception as exc:
                            logger.warning("Heartbeat of %r failed, will retry: %s", context.task, exc)

            failure: Exception | None = None
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as body:
                    tg.start_soon(beat, body)
                    try:
                        await func(context)
                    except Exception as exc:  # re-raised below, outside the task group (no exception group)
                        failure = exc
                tg.cancel_scope.cancel()
            if failure is not None:
                raise failure

        return wrapper

    return decorator


__all__ = ["with_heartbeat"]
