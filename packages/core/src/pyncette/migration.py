"""Migrating a Pyncette 1.x store in place: ``pyncette migrate MODULE:APP --from-1x``.

A backend that knows its 1.x layout implements :meth:`pyncette.abc.Backend.legacy`, returning a
:class:`~pyncette.abc.LegacyStore` for the same options the 1.x app used. The migration then:

1. refuses, unless forced, while a 1.x record holds a live lease (1.x workers still running);
2. sets the 1.x data aside as a backup (:meth:`LegacyStore.set_aside`), so that the 2.x layout, which may
   use the same table name, can be created;
3. streams the backed-up rows in batches, converts each (here, in core: the 1.x task specs, names and
   partitions are the runtime's business, not the backend's) and writes it with ``register`` in
   ``CREATE`` mode, so that a record already present is left as it is and counted;
4. drops the backup only when asked (``--drop-1x-backup``) and only after a run that failed nothing.

Every step can be repeated: a run interrupted anywhere is completed by the next one, and a run after a
complete one changes nothing (everything is "already present").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .abc import LegacyRow, LegacyStore, Record, RegisterMode, Repository
from .errors import ConfigurationError, PyncetteException
from .task import DynamicTask, StaticTask, Task

#: Rows converted and written per batch (memory stays bounded whatever the store's size).
BATCH = 1000


@dataclass
class TaskReport:
    """What happened to the records of one task."""

    migrated: int = 0
    already_present: int = 0
    failed: int = 0
    #: The first few failure reasons (bounded).
    reasons: list[str] = field(default_factory=list)


@dataclass
class MigrationReport:
    """The outcome of one migration run."""

    where: str
    found: bool
    dry_run: bool
    live_leases: int = 0
    set_aside: bool = False
    backup_dropped: bool = False
    tasks: dict[str, TaskReport] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.tasks.values())

    def task(self, name: str) -> TaskReport:
        return self.tasks.setdefault(name, TaskReport())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "where": self.where,
            "found": self.found,
            "dry_run": self.dry_run,
            "live_leases": self.live_leases,
            "set_aside": self.set_aside,
            "backup_dropped": self.backup_dropped,
            "failed": self.failed,
            "tasks": {name: vars(report) for name, report in sorted(self.tasks.items())},
        }


class LiveLeases(PyncetteException):
    """1.x records hold live leases: 1.x workers are probably still running (stop them, or pass ``force``)."""


class Converter:
    """Turns 1.x rows into 2.x records, with the app's tasks (the same app the 1.x store served)."""

    def __init__(self, tasks: Sequence[Task], now: datetime) -> None:
        self._now = now
        self._static = {_escaped(t.name): t for t in tasks if isinstance(t, StaticTask)}
        self._templates = {_escaped(t.name): t for t in tasks if isinstance(t, DynamicTask)}

    def convert(self, row: LegacyRow) -> tuple[str, Record]:
        """The owning task's name and the 2.x record; :class:`ConfigurationError` naming the reason otherwise."""
        if row.parent is None:
            static = self._static.get(row.name)
            if static is None:
                raise ConfigurationError(f"static task {_unescaped(row.name)!r} is not declared by this app")
            parent, name = static.storage_key()
            assert static.schedule is not None
            scheduled_at = row.execute_after or static.schedule.first(self._now)
            return static.name, Record(parent, name, None, scheduled_at)
        template = self._templates.get(_template_part(row.parent, self._templates))
        if template is None:
            raise ConfigurationError(f"dynamic task {_unescaped(row.parent)!r} is not declared by this app")
        if row.spec is None:
            raise ConfigurationError("the instance has no task spec")
        data = json.loads(row.spec)
        options: dict[str, Any] = dict(data.get("extra_args") or {})
        for key in ("schedule", "timezone"):
            if data.get(key) is not None:
                options[key] = data[key]
        if data.get("interval") is not None:
            options["interval"] = timedelta(seconds=data["interval"])
        if data.get("execute_at") is not None:
            options["execute_at"] = datetime.fromisoformat(data["execute_at"])
        instance = template.instantiate(data.get("name") or _instance_name(row.name), **options)
        assert instance.schedule is not None
        parent, name = instance.storage_key()
        scheduled_at = row.execute_after or instance.schedule.first(self._now)
        return template.name, Record(parent, name, instance.to_spec(), scheduled_at)


async def migrate(
    store: LegacyStore,
    open_repository: Callable[[], Any],
    tasks: Sequence[Task],
    *,
    now: datetime,
    dry_run: bool = False,
    force: bool = False,
    drop_backup: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Migrate ``store`` into the repository ``open_repository()`` opens (an async context manager).

    ``progress(rows_done)`` is called after each batch.
    """
    report = MigrationReport(await store.describe(), found=False, dry_run=dry_run)
    live, backed_up = await store.has_live_data(), await store.has_backup()
    report.found = live or backed_up
    if not report.found:
        return report
    if live:
        report.live_leases = await store.live_leases(now)
        if report.live_leases and not force:
            raise LiveLeases(
                f"{report.live_leases} record(s) of the 1.x store at {report.where} hold a live lease: stop the "
                "1.x workers (or wait for the leases to expire), or pass --force"
            )
        if backed_up:
            raise ConfigurationError(
                f"both 1.x data and a 1.x backup exist at {report.where}: a 1.x app ran after an earlier "
                "migration; remove one of them by hand before migrating again"
            )
    converter = Converter(tasks, now)
    if dry_run:
        pages = store.rows(BATCH) if backed_up else store.live_rows(BATCH)
        if pages is not None:
            await _convert_all(pages, converter, report, None, progress)
        return report
    if live:
        await store.set_aside()
        report.set_aside = True
    async with open_repository() as repository:
        await _convert_all(store.rows(BATCH), converter, report, repository, progress)
    if drop_backup and not report.failed:
        await store.drop_backup()
        report.backup_dropped = True
    return report


async def _convert_all(
    pages: AsyncIterator[list[LegacyRow]],
    converter: Converter,
    report: MigrationReport,
    repository: Repository | None,
    progress: Callable[[int], None] | None,
) -> None:
    done = 0
    async for rows in pages:
        owners: list[str] = []
        records: list[Record] = []
        for row in rows:
            try:
                owner, record = converter.convert(row)
            except (ConfigurationError, ValueError, KeyError, TypeError) as exc:
                entry = report.task(_owner_of(row))
                entry.failed += 1
                if len(entry.reasons) < 10:
                    entry.reasons.append(f"{row.parent or 'static'}/{row.name}: {exc}")
                continue
            owners.append(owner)
            records.append(record)
        written = (
            await repository.register(records, now=converter._now, mode=RegisterMode.CREATE)
            if repository is not None and records
            else [True] * len(records)
        )
        counts: Counter[tuple[str, bool]] = Counter(zip(owners, written, strict=True))
        for (owner, new), count in counts.items():
            entry = report.task(owner)
            if new:
                entry.migrated += count
            else:
                entry.already_present += count
        done += len(rows)
        if progress is not None:
            progress(done)


def _escaped(name: str) -> str:
    """A name in 1.x's canonical form (``:`` doubled)."""
    return name.replace(":", "::")


def _unescaped(name: str) -> str:
    return name.replace("::", ":")


def _template_part(parent: str, templates: dict[str, DynamicTask]) -> str:
    """The template of a 1.x parent: ``"job"`` as it is, or ``"job"`` out of a partition's ``"job:3"``."""
    if parent in templates:
        return parent
    head, sep, shard = parent.rpartition(":")
    return head if sep and shard.isdigit() and not head.endswith(":") else parent


def _instance_name(stored: str) -> str:
    """An instance's own name out of a 1.x canonical name (``"job:alice"`` -> ``"alice"``)."""
    index = 0
    while True:
        index = stored.find(":", index)
        if index < 0:
            return _unescaped(stored)
        if stored[index : index + 2] == "::":
            index += 2
            continue
        return _unescaped(stored[index + 1 :])


def _owner_of(row: LegacyRow) -> str:
    return _unescaped(row.parent or row.name)


__all__ = [
    "BATCH",
    "Converter",
    "LiveLeases",
    "MigrationReport",
    "TaskReport",
    "migrate",
]
