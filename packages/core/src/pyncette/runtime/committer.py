"""The committer: stores the outcome of finished runs, batching everything finished meanwhile into few calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar, cast

import anyio

from ..abc import Completion, Lease, Record, Repository
from ..clock import Clock, Hold
from ..errors import BackendError
from ..redaction import get_logger
from .retries import retrying

logger = get_logger("pyncette")

X = TypeVar("X")


@dataclass(eq=False, slots=True)
class Pending:
    """A commit (``change`` is the :class:`~pyncette.abc.Completion` to store) or an unlock (``change`` is the
    :class:`~pyncette.abc.Lease` to let go of), waiting to be stored.

    ``owner`` is told the result once stored (``None``: nobody needs it). A run that waits for the
    result (:meth:`Committer.finish`) gets it through ``done`` instead, with a fresh clock hold.
    """

    change: Completion | Lease
    #: When the lease expires; until then nobody else may take the record over.
    lease_until: datetime | None
    owner: object = None
    done: anyio.Event | None = None
    result: bool = False
    hold_back: Hold | None = None
    abandoned: bool = False


class _Lane:
    """One kind of storage call (commits, or unlocks): what waits for it, and the clock hold while it has work."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list[Pending] = []
        self.wakeup = anyio.Event()
        self.hold: Hold | None = None


class Committer:
    """Batches commits and unlocks. It holds the clock while it has work (a virtual clock waits for it).

    Commits and unlocks go in two lanes, each storing what came meanwhile in one call at a time: an unlock call
    that storage keeps failing (retried with backoff) does not hold up the commits behind it, and the reverse.

    A call can fail after storage applied it (the connection dropped before the answer), and its retry then
    finds the lease gone. So after a retry, an item reported lost counts as stored when the successful
    attempt was sent before the item's lease expired: until then nobody else could take the record over,
    so only our own earlier attempt can have cleared the lease. Past the lease, the record is read back,
    and counts as ours only if it shows exactly that outcome (rescheduled to ``next_at`` and unleased, or
    gone). A call that raises something other than :class:`BackendError` is split into one call per item,
    so that only the item at fault fails.
    """

    def __init__(
        self, repository: Repository, clock: Clock, on_stored: Callable[[Pending, bool], None], owner: object
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._owner = owner
        self._on_stored = on_stored
        self._commits = _Lane("commits")
        self._unlocks = _Lane("unlocks")

    def submit(self, item: Pending, hold: Hold) -> None:
        """Queue ``item``, taking over the caller's clock hold (the committer holds the clock from now on)."""
        lane = self._commits if isinstance(item.change, Completion) else self._unlocks
        lane.pending.append(item)
        if lane.hold is None:
            lane.hold = self._clock.hold(f"committer ({lane.name})", self._owner)
        hold.release()
        lane.wakeup.set()

    async def finish(self, change: Completion, lease_until: datetime | None, hold: Hold) -> tuple[bool, Hold]:
        """Commit and wait until it is stored; return whether it was (``False``: the lease was lost) and a
        fresh hold replacing the one handed over, taken the moment the result arrived."""
        item = Pending(change, lease_until, done=anyio.Event())
        self.submit(item, hold)
        assert item.done is not None
        try:
            await item.done.wait()
        except BaseException:
            item.abandoned = True
            if item.hold_back is not None:
                item.hold_back.release()
            raise
        assert item.hold_back is not None
        return item.result, item.hold_back

    async def run(self) -> None:
        """Store what is submitted, until cancelled."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._serve, self._unlocks, self._unlock)
            await self._serve(self._commits, self._commit)

    async def _serve(self, lane: _Lane, store: Callable[[list[Pending]], Awaitable[list[bool]]]) -> None:
        while True:
            await lane.wakeup.wait()
            lane.wakeup = anyio.Event()
            batch, lane.pending = lane.pending, []
            self._resolve(batch, await store(batch))
            if not lane.pending and lane.hold is not None:
                hold, lane.hold = lane.hold, None
                hold.release()

    async def _commit(self, items: list[Pending]) -> list[bool]:
        completions = cast("list[Completion]", [item.change for item in items])
        failures = 0
        sent_at = self._clock.now()

        async def attempt(batch: list[Completion]) -> list[bool]:
            nonlocal failures, sent_at
            sent_at = self._clock.now()
            try:
                return await self._repository.commit(batch)
            except BackendError:
                failures += 1
                raise

        results = await self._call("commit", items, completions, attempt)
        if failures:
            for i, (ok, item) in enumerate(zip(results, items, strict=True)):
                if not ok:
                    results[i] = await self._landed_earlier(item, sent_at)
        return results

    async def _landed_earlier(self, item: Pending, sent_at: datetime) -> bool:
        """Whether a commit reported lost after a retry was in fact stored by an earlier attempt."""
        if item.lease_until is not None and sent_at < item.lease_until:
            return True
        completion = item.change
        assert isinstance(completion, Completion)
        get = partial(self._repository.get, completion.parent, completion.name)
        try:
            return _shows(await retrying(self._clock, "verify commit", get), completion)
        except Exception as exc:
            _log_item_fault("get", completion.parent, completion.name, exc)
            return False

    async def _unlock(self, items: list[Pending]) -> list[bool]:
        leases = cast("list[Lease]", [item.change for item in items])
        return await self._call("unlock", items, leases, self._repository.unlock)

    async def _call(
        self, what: str, items: list[Pending], arguments: list[X], call: Callable[[list[X]], Awaitable[list[bool]]]
    ) -> list[bool]:
        # Retried sooner as a lease of the batch nears its end (see retrying).
        leases = [item.lease_until for item in items if item.lease_until is not None]
        try:
            return await retrying(self._clock, what, partial(call, arguments), deadlines=leases)
        except Exception as exc:
            if len(items) == 1:
                _log_item_fault(what, items[0].change.parent, items[0].change.name, exc)
                return [False]
        results = []
        for item, argument in zip(items, arguments, strict=True):
            results += await self._call(what, [item], [argument], call)
        return results

    def _resolve(self, items: list[Pending], results: list[bool]) -> None:
        for item, ok in zip(items, results, strict=True):
            item.result = ok
            if item.done is None:
                self._on_stored(item, ok)
            elif not item.abandoned:
                item.hold_back = self._clock.hold("run, commit stored", self._owner)
                item.done.set()


def _shows(record: Record | None, completion: Completion) -> bool:
    """Whether ``record`` shows ``completion`` applied: deleted, or rescheduled to its next run (and unleased,
    unless the completion kept the lease)."""
    if completion.next_at is None:
        return record is None
    if record is None or record.scheduled_at != completion.next_at:
        return False
    return record.locked_by is None if completion.release else record.locked_by == completion.token


def _log_item_fault(what: str, parent: str, name: str, exc: BaseException) -> None:
    logger.error(
        "Storage call %r for record %s/%s raised %s: a bug in the backend or a value it refuses; "
        "the run's outcome is not stored (its lease expires and it is retried)",
        what,
        parent,
        name,
        type(exc).__name__,
        exc_info=exc,
    )


__all__ = ["Committer", "Pending"]
