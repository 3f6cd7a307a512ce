"""Coalesced registration: concurrent ``schedule_task`` calls share ``register`` round trips.

A call that finds no registration in flight sends its records at once (no added latency when it is
alone). Calls made while one is in flight wait, and the first of them then sends all of theirs in one
``register`` call per mode (the "group commit" pattern), so N concurrent callers cost about
``log(N)``-ish round trips instead of N. Each caller gets its own flags or its own error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import anyio

from ..abc import Record, RegisterMode, Repository

#: The most records one coalesced ``register`` call carries.
MAX_BATCH = 1000


@dataclass(eq=False)
class _Call:
    records: Sequence[Record]
    now: datetime
    mode: RegisterMode
    done: anyio.Event = field(default_factory=anyio.Event)
    #: Set when this call is to send the next batch itself.
    lead: bool = False
    result: list[bool] | None = None
    error: BaseException | None = None


class Registrations:
    """Sends ``register`` calls for a context, coalescing concurrent ones."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository
        self._queue: list[_Call] = []
        self._sending = False

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        """``repository.register(records, now=now, mode=mode)``, possibly in one call with others."""
        call = _Call(records, now, mode)
        self._queue.append(call)
        if self._sending:
            await call.done.wait()
            if not call.lead:
                return self._outcome(call)
        self._sending = True
        try:
            batch = self._take(call)
            with anyio.CancelScope(shield=True):  # the others in the batch wait for this round trip
                await self._send(batch)
        finally:
            if self._queue:  # hand over: the next waiting caller sends what came meanwhile
                nxt = self._queue[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._sending = False
        return self._outcome(call)

    def _take(self, own: _Call) -> list[_Call]:
        """The batch to send: this call first, then as many queued ones as fit."""
        self._queue.remove(own)
        batch, size = [own], len(own.records)
        while self._queue and size + len(self._queue[0].records) <= MAX_BATCH:
            taken = self._queue.pop(0)
            batch.append(taken)
            size += len(taken.records)
        return batch

    async def _send(self, batch: list[_Call]) -> None:
        for mode in RegisterMode:
            calls = [c for c in batch if c.mode is mode]
            if not calls:
                continue
            records = [r for c in calls for r in c.records]
            now = max(c.now for c in calls)
            try:
                flags = await self._repository.register(records, now=now, mode=mode)
            except Exception as exc:
                for c in calls:
                    c.error = exc
            else:
                start = 0
                for c in calls:
                    c.result = flags[start : start + len(c.records)]
                    start += len(c.records)
            finally:
                for c in calls:
                    if not c.lead:
                        c.done.set()
                    c.lead = False

    @staticmethod
    def _outcome(call: _Call) -> list[bool]:
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result


__all__ = ["MAX_BATCH", "Registrations"]
