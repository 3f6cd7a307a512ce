"""Group commit: concurrent ``schedule_task`` (or ``unschedule_task``) calls share storage round trips.

A call is sent at once while no other send of its :class:`GroupCommit` is in flight (no added latency
when it is alone). Calls made meanwhile queue up in groups of at most :data:`MAX_BATCH` items; when a
send finishes it hands its slot to the oldest group, whose first caller sends every item of the group
in one storage call per kind (a register mode), so N concurrent callers cost a few round trips instead
of N. Each caller gets its own flags or its own error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

import anyio

#: The most items one coalesced storage call carries.
MAX_BATCH = 1000

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: Sends items of one kind in one storage call: ``send(kind, items, now)`` returns one flag per item.
Send = Callable[[K, Sequence[T], datetime], Awaitable[list[bool]]]


@dataclass(eq=False)
class _Call(Generic[T, K]):
    items: Sequence[T]
    kind: K
    now: datetime
    result: list[bool] | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Group(Generic[T, K]):
    """Calls queued while a send is in flight; the first of them sends them all when handed the slot."""

    calls: list[_Call[T, K]]
    size: int
    #: Set when a finishing send hands its slot to this group.
    turn: anyio.Event = field(default_factory=anyio.Event)
    #: Set when this group's send is over (each call then has its result or error).
    done: anyio.Event = field(default_factory=anyio.Event)


class GroupCommit(Generic[T, K]):
    """Coalesces concurrent calls of one storage operation (``register``, ``delete_many``) of a context."""

    def __init__(self, send: Send[K, T]) -> None:
        self._send_batch = send
        self._groups: deque[_Group[T, K]] = deque()
        self._sending = False

    async def submit(self, items: Sequence[T], *, kind: K, now: datetime) -> list[bool]:
        """``send(kind, items, now)``, possibly in one call with others of the same kind."""
        call = _Call(items, kind, now)
        if not self._sending:
            self._sending = True
            try:
                await self._send([call])
            finally:
                self._hand_over()
            return self._outcome(call)
        group = self._join(call)
        if group.calls[0] is not call:
            await group.done.wait()
            return self._outcome(call)
        # The others in the group count on this call to send their items: it does so even if it is
        # cancelled meanwhile (a queued caller that is cancelled would otherwise strand its group).
        with anyio.CancelScope(shield=True):
            await group.turn.wait()
            try:
                await self._send(group.calls)
            finally:
                group.done.set()
                self._hand_over()
        return self._outcome(call)

    def _join(self, call: _Call[T, K]) -> _Group[T, K]:
        """The group ``call`` queues in: the newest one while it has room, else a new one."""
        if self._groups:
            group = self._groups[-1]
            if group.size + len(call.items) <= MAX_BATCH:
                group.calls.append(call)
                group.size += len(call.items)
                return group
        group = _Group([call], len(call.items))
        self._groups.append(group)
        return group

    def _hand_over(self) -> None:
        """A send is over: the oldest waiting group sends next, or nothing is in flight any more."""
        if self._groups:
            self._groups.popleft().turn.set()
        else:
            self._sending = False

    async def _send(self, calls: list[_Call[T, K]]) -> None:
        by_kind: dict[K, list[_Call[T, K]]] = {}
        for c in calls:
            by_kind.setdefault(c.kind, []).append(c)
        for kind, same in by_kind.items():
            items = same[0].items if len(same) == 1 else [item for c in same for item in c.items]
            try:
                flags = await self._send_batch(kind, items, max(c.now for c in same))
            except Exception as exc:
                for c in same:
                    c.error = exc
            else:
                start = 0
                for c in same:
                    c.result = flags[start : start + len(c.items)]
                    start += len(c.items)

    @staticmethod
    def _outcome(call: _Call[T, K]) -> list[bool]:
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result


__all__ = ["MAX_BATCH", "GroupCommit"]
