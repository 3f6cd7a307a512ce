"""The storage backend contract.

A backend is two objects:

* a :class:`Backend` descriptor, published through the ``pyncette.backends``
  entry-point group. It names the backend, declares its
  :class:`Capabilities` and opens repositories. Importing it must not connect
  to anything.
* a :class:`Repository`, the open connection to storage, used by the runtime
  through the handful of methods below.

The runtime keeps every scheduling rule (cron, intervals, time zones, failure
modes) to itself; a repository is a store of :class:`Record` rows with a few
*atomic* state transitions. Every method that takes ``now`` must use that
value and never read a clock of its own: the runtime may run on a virtual
clock (see :mod:`pyncette.testing`), and all instances of an app must agree on
what "now" means.

Records are grouped by ``parent`` (a static task, a dynamic task template or
one partition of a partitioned template) and identified within a parent by
``name``. All times are timezone-aware UTC :class:`~datetime.datetime` values;
a backend must keep at least millisecond precision.

A third party implements :class:`Repository` and :class:`Backend`, registers
the descriptor under ``pyncette.backends`` and runs the conformance suite::

    pytest --pyargs pyncette_conformance --pyncette-backend NAME
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from .errors import BackendError, ConfigurationError
from .options import Option, Options, Settings
from .redaction import get_logger, redact
from .schedule import LATEST

#: The latest time any backend must store. Nothing is ever scheduled later; the runtime parks a
#: record it cannot use (see :attr:`Record.corrupt`) by committing it to this time.
PARKED_AT = LATEST


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; declare them honestly.

    Attributes:
        persistent: state survives closing and reopening the repository (the
            conformance suite runs its persistence tests only then).
        coordinated: several processes (or hosts) sharing the storage never
            run one due task twice; claims are atomic across connections (the
            conformance suite runs its multi-process tests only then).
        asyncio_only: the driver only works on asyncio (not trio); the app
            refuses to start on another event loop.
        notifications: the repository pushes wake-ups to other processes (see
            :meth:`Repository.wakeups`): work another process registers starts in milliseconds instead of
            at the next poll.
        control: the repository implements the control-plane methods (:meth:`Repository.pause`,
            :meth:`~Repository.resume`, :meth:`~Repository.pauses`, :meth:`~Repository.reschedule`
            and :meth:`~Repository.parents`), which pausing, run-now and pruning need. Without it those
            operations raise :class:`~pyncette.errors.ConfigurationError`; everything else works.
    """

    persistent: bool = False
    coordinated: bool = False
    asyncio_only: bool = False
    notifications: bool = False
    control: bool = False

    def describe(self) -> list[str]:
        """The names of the capabilities that are set, for listings."""
        return [name for name, value in self.__dict__.items() if value]


@dataclass(frozen=True)
class Record:
    """One task's stored state.

    Attributes:
        parent: the group the record belongs to (opaque to the backend).
        name: the record's name, unique within ``parent``.
        spec: JSON text describing a dynamic instance, ``None`` for a static task.
        scheduled_at: when the next run is due.
        locked_until: when the current lease expires, ``None`` if not leased.
        locked_by: the token of the current lease, ``None`` if not leased.
        corrupt: set (to the reason) by a backend that could not decode the stored record; see
            :meth:`Repository.claim`. Never stored: computed when the record is read.
        state: the runtime's bookkeeping for the record (attempt counter, last outcome and the like), JSON
            text owned by core. A backend stores it verbatim, like ``spec``, and never interprets it; a
            record stored without one (written before the field existed) reads as ``None``. Written by
            :meth:`Repository.register` (``CREATE``, ``FORCE`` and the insert of ``UPDATE``) and by
            :meth:`Repository.commit` (:attr:`Completion.state`); returned by every read.
    """

    parent: str
    name: str
    spec: str | None
    scheduled_at: datetime
    locked_until: datetime | None = None
    locked_by: str | None = None
    corrupt: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class Lease:
    """Identifies one leased record: the token must still be the record's ``locked_by``."""

    parent: str
    name: str
    token: str


@dataclass(frozen=True)
class Completion:
    """The outcome of a run to store: reschedule to ``next_at``, or delete the record when it is ``None``.

    Attributes:
        state: ``None`` leaves the stored :attr:`Record.state` as it is; a string replaces it, in the same
            atomic step (and storage round trip) as the reschedule.
        release: ``True`` (the default) clears the lease; ``False`` reschedules to ``next_at`` but keeps
            the lease (``locked_until`` and ``locked_by`` unchanged), so no other claim gets the record
            until the holder unlocks it, commits it again or lets the lease expire. Only meaningful with
            ``next_at`` set: a deletion ignores it.
    """

    parent: str
    name: str
    token: str
    next_at: datetime | None
    state: str | None = None
    release: bool = True


@dataclass(frozen=True)
class PauseRule:
    """A stored pause: while it exists, no claim returns the records of ``parent`` it matches.

    Attributes:
        parent: the group whose records it holds.
        match: a record name (``prefix`` false), or a prefix of names (``prefix`` true; the empty prefix
            matches every record of the parent). Compared as plain text, character by character: no
            character is special (``%``, ``_``, ``*``, ``?`` and ``[`` included).
        prefix: whether ``match`` is a prefix rather than a whole name.
        info: JSON text owned by core (the note, who paused and when), stored verbatim like
            :attr:`Record.spec`; ``None`` when there is none.

    A rule is identified by ``(parent, match, prefix)``: storing it again replaces its ``info``.
    """

    parent: str
    match: str
    prefix: bool
    info: str | None = None

    def matches(self, name: str) -> bool:
        """Whether the record ``name`` (of the rule's parent) is held by this rule."""
        return name.startswith(self.match) if self.prefix else name == self.match


class RegisterMode(Enum):
    """How :meth:`Repository.register` treats a record that already exists."""

    #: Insert when missing (with the given ``state``); leave an existing record untouched (static tasks).
    CREATE = "create"
    #: Insert when missing (with the given ``state``); otherwise, unless it is locked
    #: (``locked_until > now``), replace ``spec`` and set ``scheduled_at`` to the sooner of the
    #: stored and the new value, keeping the lock fields and the stored ``state`` as they are.
    UPDATE = "update"
    #: Insert or overwrite ``spec``, ``scheduled_at`` and ``state``, and clear any lock.
    FORCE = "force"


class Repository(ABC):
    """An open connection to task storage. Methods are called from one event loop, possibly concurrently.

    Errors: a method may raise :class:`~pyncette.errors.BackendError` for a
    transient storage failure (the runtime logs it and retries with backoff)
    and :class:`~pyncette.errors.ConfigurationError` for a problem the user must
    fix (a value the storage refuses). Any other exception is a bug in the
    backend: the runtime logs it at ERROR with its traceback and does not retry
    the call as if storage were down. Wrap driver calls in :func:`map_exceptions`
    to translate them. One record that cannot be decoded never fails a call
    (see :attr:`Record.corrupt`).
    """

    @abstractmethod
    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        """Create or update records, in one round trip where the storage allows it.

        ``locked_until`` and ``locked_by`` of the given records are ignored;
        ``state`` is stored where a record is inserted or forced (see :class:`RegisterMode`).
        Returns one flag per record, in order: ``True`` where the record was
        written, ``False`` where it was left as it was (already present in
        ``CREATE`` mode; locked in ``UPDATE`` mode). Each record is updated
        atomically; the batch as a whole need not be. A stored record that
        cannot be decoded counts as missing in ``UPDATE`` and ``FORCE`` mode
        (it is overwritten) and as present in ``CREATE`` mode.
        """

    @abstractmethod
    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        """Atomically lease up to ``limit`` due records of ``parent``, in one round trip.

        A record is due when ``scheduled_at <= now`` and it is not leased
        (``locked_until`` is ``None`` or ``<= now``). Each claimed record gets
        ``locked_until = lease_until`` and ``locked_by = token`` and is returned
        with those values and its stored ``spec`` and ``state``. Records due earliest should be claimed first.
        Concurrent claims, from any process, must never both return one record
        with overlapping leases: this is the guarantee that prevents double runs.
        The cost must depend on the number of due records, not on how many exist.

        ``now`` is the app's time as of which to claim: use it, never the
        storage server's clock. It may be a few milliseconds ahead of the app's
        clock (a static run claimed ahead of its due time; the run still starts
        on time).

        A due record whose stored form cannot be decoded must neither fail the
        claim nor hold up the other records. Return it with :attr:`Record.corrupt`
        set to the reason, filling in what could be read (an unreadable
        ``scheduled_at`` becomes :data:`PARKED_AT`, an unreadable lease ``None``):

        * if it was leased like the others (``locked_by == token``), the runtime
          logs it once and parks it with a commit to :data:`PARKED_AT`, which
          must then succeed whatever the stored time fields hold;
        * if it cannot even be leased (its stored form is unreadable to the
          server too), take it out of the claimable set in the same atomic step,
          keeping its data, and return it unleased: no later claim may return it
          until :meth:`register` overwrites it.
        """

    @abstractmethod
    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        """Finish runs: for each completion whose ``token`` still matches ``locked_by``,
        set ``scheduled_at = next_at``, replace ``state`` when :attr:`Completion.state`
        is not ``None``, and clear the lease unless :attr:`Completion.release` is
        ``False`` (then ``locked_until`` and ``locked_by`` stay as they are); or delete
        the record when ``next_at`` is ``None``.

        Returns one flag per completion: ``False`` where the lease was lost
        (token mismatch or record gone), in which case nothing is written, the
        state included. Each completion is atomic on its own (schedule, state and
        lease change together or not at all) and costs no more round trips than
        one without a state.
        """

    @abstractmethod
    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        """Release leases without rescheduling (the run is retried as soon as it is claimed again).

        Returns ``False`` for leases that were already lost.
        """

    @abstractmethod
    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        """Move a held lease's expiry to ``lease_until``; ``False`` when the lease is lost."""

    @abstractmethod
    async def delete(self, parent: str, name: str) -> bool:
        """Remove a record whatever its lease; ``False`` when it did not exist."""

    async def delete_many(self, keys: Sequence[tuple[str, str]]) -> list[bool]:
        """:meth:`delete` for each ``(parent, name)`` key, in as few round trips as the storage allows.

        Returns one flag per key, in order (a key given twice is ``True`` at most once). Each deletion is
        atomic on its own; the batch as a whole need not be. The runtime sends concurrent
        ``unschedule_task`` calls through it. Optional: the default deletes the keys one by one.
        """
        return [await self.delete(parent, name) for parent, name in keys]

    @abstractmethod
    async def get(self, parent: str, name: str) -> Record | None:
        """Read one record (its ``state`` included), or ``None``. A record that cannot be decoded is returned
        with ``corrupt`` set."""

    @abstractmethod
    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        """Page through every record of ``parent``: at most ``limit`` per page.

        ``continuation`` is ``None`` for the first page, then the value the
        previous page returned; the last page returns ``None``. Records carry
        their ``state``. Paging must
        neither skip nor repeat records that exist throughout the iteration.
        Records that cannot be decoded are returned with ``corrupt`` set.
        """

    # -- the control plane: optional, declared by Capabilities.control ------------------------------------

    async def pause(self, rule: PauseRule, *, now: datetime) -> int | None:
        """Store ``rule`` (replacing the ``info`` of an identical one) and hold the records it matches.

        Atomic with storing the rule: from when this returns, no :meth:`claim` (from any connection or
        process) returns a record the rule matches, whether it exists now or is registered later, until
        :meth:`resume` removes every rule matching it. Nothing else changes for a held record:
        ``register``, ``commit``, ``unlock``, ``extend``, ``delete``, ``get``, ``list_page`` and
        :meth:`reschedule` work on it as on any other (a run in progress keeps its lease and commits; the
        record stays held), and it keeps its ``scheduled_at``.

        Cost: one round trip (one statement or script, or a parent-level flag), however many records the
        rule matches -- never one call per record. Holding records must not make later claims of the
        parent cost more per held record than a one-off amount.

        Returns how many stored records the rule matches, or ``None`` when the backend cannot tell without
        extra work.
        """
        raise NotImplementedError

    async def resume(self, parent: str, match: str, *, prefix: bool, now: datetime) -> bool:
        """Remove the rule ``(parent, match, prefix)``; ``False`` when there was none.

        Atomic with removing it: every record it matched that no remaining rule matches becomes claimable
        again, at its stored ``scheduled_at`` (a time already past is due at once) and under its stored lease.
        Cost as for :meth:`pause`.
        """
        raise NotImplementedError

    async def pauses(self, parent: str) -> list[PauseRule]:
        """The rules stored for ``parent`` (any order), in one round trip."""
        raise NotImplementedError

    async def reschedule(
        self, parent: str, name: str, *, expected: datetime, scheduled_at: datetime, state: str | None, now: datetime
    ) -> bool:
        """Compare and set: if the record exists, its stored ``scheduled_at`` equals ``expected`` (to the
        microsecond) and it is not leased at ``now`` (``locked_until`` is ``None`` or ``<= now``), set its
        ``scheduled_at`` and, unless ``state`` is ``None``, its ``state``, atomically; ``spec``, the lease fields
        and whether a pause holds it stay as they are. Otherwise write nothing and return ``False``.

        Used to trigger a run now without losing the regular next run (the runtime keeps that in the state):
        ``expected`` makes sure no run was committed between reading the record and writing it.
        """
        raise NotImplementedError

    async def parents(self, *, limit: int, continuation: str | None) -> tuple[list[str], str | None]:
        """Page through the parents that have at least one record, at most ``limit`` per page, in an order
        of the backend's choosing; ``continuation`` as in :meth:`list_page`. Never repeats a parent and never
        skips one that has records throughout the iteration. An administrative operation (pruning): it may
        cost a scan of the storage.
        """
        raise NotImplementedError

    # -- wake-ups: optional, declared by Capabilities.notifications ---------------------------------------

    def wakeups(self) -> AbstractAsyncContextManager[AsyncIterator[datetime]] | None:
        """Hints from other processes that work became due sooner than they may know; ``None`` (the default)
        when the backend only polls.

        The context manager connects (a dedicated connection where the storage needs one); iterating it
        yields, for each hint, the time the work is due (aware UTC; often a time already past). A hint is
        sent when a write commits that makes a record due sooner than others may know: ``register`` of a
        record inserted or moved sooner, ``reschedule`` and ``resume``. Hints are best effort: they may be
        lost, repeated or late, and nothing may depend on them (the runtime still polls every
        ``poll_interval``). Iteration ends, or raises :class:`~pyncette.errors.BackendError`, when the
        connection is lost; the runtime then opens it again after a short backoff. Hints must not cost a
        round trip of their own on the writer's side (send them with the write: in the same script or
        transaction).
        """
        return None

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        """Testing hook: store ``raw`` verbatim as the record's spec, bypassing validation.

        The conformance suite uses it to check that a record whose spec the
        runtime cannot decode affects itself alone. Optional: the default skips that test.
        """
        raise NotImplementedError

    async def corrupt(self, parent: str, name: str) -> None:
        """Testing hook: damage the stored record so that it can no longer be decoded, as a hand edit or a
        foreign writer might (garbage in a time field, or in the stored form as a whole).

        The conformance suite uses it to check that such a record affects itself alone. Optional: the
        default skips those tests.
        """
        raise NotImplementedError

    async def kill_connections(self) -> int:
        """Testing hook: cut this repository's open server connections the way a network failure or a
        server-side kill would (and only this repository's: other clients of the server are left alone).
        Returns how many were cut.

        The conformance suite's recovery tests use it to check that runs survive it exactly once.
        Optional: the default skips those tests.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class LegacyRow:
    """One record as Pyncette 1.x stored it.

    Attributes:
        name: the record's name as stored: a static task's name, or an instance's name (in 1.x's
            canonical form, with ``:`` doubled, where the backend stored it that way).
        parent: the 1.x parent: the template's canonical name (``"job"``), or ``"<template>:<shard>"`` for a
            partitioned template; ``None`` for a static task.
        spec: the instance's 1.x task spec (JSON text); ``None`` for a static task.
        execute_after: when the next run is due (aware UTC), ``None`` when the store had none.
        locked_until: when its lease expires, ``None`` when not leased.
        locked_by: the lease's token, ``None`` when not leased.
    """

    name: str
    parent: str | None
    spec: str | None
    execute_after: datetime | None
    locked_until: datetime | None = None
    locked_by: str | None = None


class LegacyStore(ABC):
    """The 1.x data of one store (a table, a key namespace), as a backend reads it. Used by one migration.

    Methods may raise :class:`~pyncette.errors.BackendError` (transient) and
    :class:`~pyncette.errors.ConfigurationError`; the migration stops and can be run again.
    """

    @abstractmethod
    async def describe(self) -> str:
        """Where the 1.x data lives, for messages (``table 'pyncette_tasks' at host:5432/db``); no secrets."""

    @abstractmethod
    async def has_live_data(self) -> bool:
        """Whether 1.x data is present in its original place (not yet set aside)."""

    @abstractmethod
    async def has_backup(self) -> bool:
        """Whether the set-aside copy of the 1.x data exists."""

    @abstractmethod
    async def live_leases(self, now: datetime) -> int:
        """How many 1.x records (in their original place) hold a lease that has not expired at ``now``."""

    @abstractmethod
    async def set_aside(self) -> None:
        """Move the 1.x data to its backup place (atomically where the storage allows), making room for the
        2.x layout. Called only when the data is live and no backup exists."""

    @abstractmethod
    def rows(self, batch: int) -> AsyncIterator[list[LegacyRow]]:
        """The backed-up 1.x rows, ``batch`` at a time (never all at once)."""

    @abstractmethod
    async def drop_backup(self) -> None:
        """Delete the backup for good."""

    def live_rows(self, batch: int) -> AsyncIterator[list[LegacyRow]] | None:
        """The 1.x rows in their original place, like :meth:`rows`, for a dry run before anything is set aside.

        Optional: ``None`` (the default) when the store cannot read them there; a dry run then reports what
        it found without per-task counts.
        """
        return None


_legacy_logger = get_logger("pyncette.migration")

#: The columns of Pyncette 1.x's table in its SQL backends (SQLite, PostgreSQL, MySQL alike). A table with
#: all of them is a 1.x table; the 2.x table has none of ``parent_name``, ``execute_after``, ``task_spec``.
SQL_1X_COLUMNS = frozenset({"name", "parent_name", "locked_until", "locked_by", "execute_after", "task_spec"})


def backup_table_name(table: str, max_length: int = 63) -> str:
    """Where a SQL backend sets aside the 1.x table ``table``: ``<table>_1x_backup``, shortened with a hash of
    ``table`` when that would exceed ``max_length`` characters (the server's identifier limit)."""
    name = f"{table}_1x_backup"
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: max_length - 19]}_{digest}_1x_backup"


def epoch_seconds(value: object, column: str, name: object) -> datetime | None:
    """A 1.x time stored as seconds since the epoch (SQLite, MySQL) as an aware UTC datetime.

    ``None`` stays ``None``; anything else that is not a number (a hand edit) is logged, naming the record
    ``name`` and the ``column``, and read as ``None`` (the record is then scheduled afresh).
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc)
    _legacy_logger.warning("1.x record %r: %s %r is not a time; ignored", name, column, str(value)[:40])
    return None


class SqlLegacyStore(LegacyStore):
    """The part of a SQL backend's :class:`LegacyStore` that is the same everywhere: the 1.x table (told by its
    columns, :data:`SQL_1X_COLUMNS`) is set aside by renaming it to :func:`backup_table_name`."""

    def __init__(self, table: str, backup: str, where: str) -> None:
        self._table = table
        self._backup = backup
        self._where = where

    @abstractmethod
    async def _columns(self, table: str) -> set[str]:
        """The column names of ``table``; empty when there is no such table."""

    async def describe(self) -> str:
        return f"table {self._table!r} at {self._where}"

    async def has_live_data(self) -> bool:
        return await self._columns(self._table) >= SQL_1X_COLUMNS

    async def has_backup(self) -> bool:
        columns = await self._columns(self._backup)
        if columns and not columns >= SQL_1X_COLUMNS:
            raise ConfigurationError(
                f"table {self._backup!r} at {self._where} is not a Pyncette 1.x backup (other columns): "
                "rename or drop it before migrating"
            )
        return bool(columns)


class Backend(ABC):
    """A backend descriptor: what the ``pyncette.backends`` entry point refers to.

    Calling the descriptor with keyword options (``backend(redis_url=...)``)
    validates them and returns an async context manager yielding a
    :class:`Repository`; this makes it usable as a Pyncette 1.x ``repository_factory``.
    """

    #: The entry-point name; also the prefix of its options (``redis`` -> ``redis_url``).
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: The options this backend accepts, each named with the prefix (see :mod:`pyncette.options`).
    options: ClassVar[Options] = Options()

    def settings(self, options: Mapping[str, Any]) -> Settings:
        """Validate the options meant for this backend (those starting with ``<name>_``); others are ignored.

        Raises :class:`~pyncette.errors.ConfigurationError` naming a bad or unknown option.
        """
        prefix = f"{self.name}_"
        return self.options.parse({k: v for k, v in options.items() if k.startswith(prefix)}, owner=self.name)

    @abstractmethod
    def open(self, settings: Settings) -> AbstractAsyncContextManager[Repository]:
        """Connect with validated ``settings``; the context manager yields the repository.

        Must raise :class:`~pyncette.errors.ConfigurationError` for a setting the
        server refuses and :class:`~pyncette.errors.BackendError` when storage
        cannot be reached, promptly (bounded by a timeout), with a message that
        names the option or the server and never a secret (see :func:`map_exceptions`).
        """

    def capabilities_for(self, settings: Settings) -> Capabilities:
        """The capabilities with these settings (for backends whose abilities depend on them)."""
        return self.capabilities

    async def purge(self, settings: Settings) -> None:  # noqa: B027 - optional hook
        """Remove all storage these settings point at (table, key namespace, prefix).

        Used by the conformance suite to clean up after each test. The default does nothing.
        """

    def isolated_options(self, unique: str, workdir: Path) -> dict[str, Any]:
        """Options pointing at a fresh, empty namespace, for tests (the conformance suite calls this).

        The default sets every option declared ``isolates`` to ``unique`` (a short string of
        lowercase letters and digits, starting with a letter). Override to add what the schema
        cannot express, such as a file in ``workdir``.
        """
        return {name: unique for name, option in self.options.items() if option.isolates}

    def legacy(self, settings: Settings) -> AbstractAsyncContextManager[LegacyStore] | None:
        """The Pyncette 1.x data these settings pointed at, for ``pyncette migrate --from-1x``.

        ``None`` (the default) when the backend knows no 1.x layout. The context manager connects (without
        creating any 2.x table) and yields a :class:`LegacyStore`; see :mod:`pyncette.migration`.
        """
        return None

    def __call__(self, **options: Any) -> AbstractAsyncContextManager[Repository]:
        return self.open(self.settings(options))

    def __repr__(self) -> str:
        return f"<pyncette backend {self.name!r}>"


@contextlib.contextmanager
def map_exceptions(mapping: Mapping[type[BaseException], type[Exception]], what: str) -> Iterator[None]:
    """Translate driver exceptions into Pyncette's hierarchy at the backend boundary.

    ``mapping`` maps driver exception types to Pyncette ones (usually
    :class:`~pyncette.errors.BackendError`); ``what`` names the operation in the
    message, which is redacted (see :func:`pyncette.redaction.redact`). Pyncette's own exceptions
    pass through unchanged; anything not in ``mapping`` propagates as it is (a bug, to be fixed).
    """
    try:
        yield
    except (BackendError, ConfigurationError):
        raise
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                raise target(redact(f"{what} failed: {type(exc).__name__}: {exc}")) from exc
        raise


__all__ = [
    "PARKED_AT",
    "SQL_1X_COLUMNS",
    "Backend",
    "Capabilities",
    "Completion",
    "Lease",
    "LegacyRow",
    "LegacyStore",
    "Option",
    "Options",
    "PauseRule",
    "Record",
    "RegisterMode",
    "Repository",
    "Settings",
    "SqlLegacyStore",
    "backup_table_name",
    "epoch_seconds",
    "get_logger",
    "map_exceptions",
    "redact",
]
