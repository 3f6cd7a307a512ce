"""The task body: its context built, the middlewares around it, and its ``timeout`` (on the app's clock)."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

import anyio

from .. import events
from ..clock import Clock
from ..errors import TaskTimeout
from ..model import AppContext, Context, RunHandle
from ..schedule import UTC
from ..task import Instance, StaticTask
from .description import AppDescription


class Body:
    """Calls task bodies: builds each run's :class:`~pyncette.model.Context`, then calls the body through the
    app's middlewares, cancelled after the task's ``timeout``."""

    def __init__(
        self, *, app_context: AppContext, description: AppDescription, clock: Clock, values: dict[str, Any]
    ) -> None:
        self._app_context = app_context
        self._middlewares = description.middlewares
        self._listeners = listeners = description.listeners
        self._clock = clock
        self._values = values
        self._on_started = listeners.wants(events.Started)  # asked once: checked on every run

    def context(
        self,
        task: StaticTask | Instance,
        run: RunHandle,
        nominal: datetime,
        attempt: int,
        origin: dict[str, str] | None,
    ) -> Context:
        """The context of a run scheduled at ``nominal`` (emits :class:`~pyncette.events.Started`)."""
        context = Context._of_run(
            self._app_context, task, nominal.astimezone(task.tz), attempt, run, origin, self._values
        )
        if self._on_started:
            self._listeners.emit(events.Started(task, nominal, self._clock.now(), attempt))
        return context

    def invoke(self, context: Context, started: datetime) -> Awaitable[None]:
        """Call the body through the middlewares; cancel it after the task's ``timeout`` (on the app's clock)."""
        timeout = context.task.policies.timeout
        if timeout is not None:
            return self._call_with_timeout(context, started, timeout)
        if not self._middlewares:
            return context.task.func(context)  # returned, not awaited here: no coroutine of ours per run
        return self._call(context)

    async def _call_with_timeout(self, context: Context, started: datetime, limit: timedelta) -> None:
        timed_out = done = False
        error: Exception | None = None
        async with anyio.create_task_group() as group:

            async def watchdog() -> None:
                nonlocal timed_out
                hold = self._clock.hold("timeout watchdog", self._app_context)
                try:
                    await self._clock.sleep((started + limit - self._clock.now()).total_seconds())
                finally:
                    hold.release()
                if not done:
                    timed_out = True
                    group.cancel_scope.cancel()

            group.start_soon(watchdog)
            try:
                await self._call(context)
            except Exception as exc:
                error = exc
            done = True
            group.cancel_scope.cancel()
        if timed_out:
            task = context.task
            if self._listeners.wants(events.TimedOut):
                self._listeners.emit(
                    events.TimedOut(
                        task, context.scheduled_at.astimezone(UTC), self._clock.now(), context.attempt, limit
                    )
                )
            raise TaskTimeout(f"task {task.canonical_name!r} ran longer than its timeout of {limit}")
        if error is not None:
            raise error

    async def _call(self, context: Context) -> None:
        middlewares = self._middlewares
        if not middlewares:
            await context.task.func(context)
            return

        async def call(index: int) -> None:
            if index == len(middlewares):
                await context.task.func(context)
            else:
                await middlewares[index](context, lambda: call(index + 1))

        await call(0)


__all__ = ["Body"]
