"""One claimed run, as it moves through the runtime: from the claim, through the body, to its stored outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from ..abc import Completion, Lease, Record
from ..clock import Hold
from ..task import Instance, StaticTask


@dataclass(eq=False, slots=True)
class Run:
    """A claimed record and the task it runs, with the clock hold that counts it as work in progress."""

    task: StaticTask | Instance
    #: The claimed record (leased: its ``locked_by`` is this run's lease token).
    record: Record
    hold: Hold | None
    #: Extends the lease (the runner's, shared by every run): what :meth:`heartbeat` calls.
    extend: Callable[[Run], Awaitable[None]]
    #: The body is over and the outcome is with the committer.
    committing: bool = False
    #: With ``history=``: the run counter as claimed (the slot of this run's entry, modulo the size).
    counted: int | None = None
    #: Whether heartbeats extend the lease (not once the run let go of its record before its body).
    guarded: bool = True
    #: A heartbeat found the lease lost.
    lost: bool = False

    @property
    def lease(self) -> Lease:
        """The run's lease (made when needed: most runs only ever commit, through :meth:`completion`)."""
        record = self.record
        assert record.locked_by is not None
        return Lease(record.parent, record.name, record.locked_by)

    def completion(self, next_at: datetime | None, state: str | None = None, *, release: bool = True) -> Completion:
        """The run's outcome to store: reschedule to ``next_at`` (or delete the record when ``None``), storing
        ``state`` (``None``: keep the stored one), and let go of the lease unless ``release`` is false."""
        record = self.record
        assert record.locked_by is not None
        return Completion(record.parent, record.name, record.locked_by, next_at, state, release)

    async def heartbeat(self) -> None:
        """The body's ``context.heartbeat()``: extend the lease, or raise
        :class:`~pyncette.errors.LeaseLostException` once it is lost."""
        if self.guarded:
            await self.extend(self)

    def give_hold(self) -> Hold:
        """Hand the hold over (to the committer); the run holds nothing afterwards."""
        hold, self.hold = self.hold, None
        assert hold is not None
        return hold

    def __repr__(self) -> str:
        return f"<run of {self.task!r} due {self.record.scheduled_at.isoformat()}>"


__all__ = ["Run"]
