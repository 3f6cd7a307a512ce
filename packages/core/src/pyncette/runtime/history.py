"""Run history (the ``history=`` task option): the last runs of each record, kept in storage.

Each record with history has a ring of ``history`` entries in the storage parent ``<parent>/history``,
named ``<record name>/<slot>``: the run counter in the record's state (:attr:`RunState.runs`) picks the
slot, so the ring never grows and writing an entry is one call (an overwrite), with no read first.
Entries are records that never come due (``scheduled_at`` is :data:`~pyncette.abc.PARKED_AT`); their spec
holds the entry as JSON. Entries older than ``history_max_age`` are dropped when the history is read.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime

import anyio

from ..abc import PARKED_AT, Record, RegisterMode, Repository
from ..model import HistoryEntry
from ..policies import Policies
from ..redaction import get_logger
from ..runstate import summary

logger = get_logger("pyncette")

#: This process, as history entries name it.
PROCESS = f"{socket.gethostname()}:{os.getpid()}"


def parent_of(parent: str) -> str:
    """The storage parent holding the history of the records of ``parent``."""
    return f"{parent}/history"


def entry_name(name: str, slot: int) -> str:
    return f"{name}/{slot}"


def encode(
    scheduled_at: datetime,
    started: datetime,
    finished: datetime,
    outcome: str,
    attempt: int,
    error: BaseException | None,
) -> str:
    return json.dumps(
        {
            "s": scheduled_at.isoformat(),
            "b": started.isoformat(),
            "e": finished.isoformat(),
            "o": outcome,
            "a": attempt,
            "p": PROCESS,
            "x": None if error is None else summary(error),
        },
        ensure_ascii=False,
    )


def decode(spec: str | None) -> HistoryEntry | None:
    """An entry from its stored form; ``None`` when it cannot be read (it is then left out)."""
    try:
        data = json.loads(spec or "")
        return HistoryEntry(
            datetime.fromisoformat(data["s"]),
            datetime.fromisoformat(data["b"]),
            datetime.fromisoformat(data["e"]),
            str(data["o"]),
            int(data["a"]),
            str(data["p"]),
            None if data.get("x") is None else str(data["x"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


async def write(repository: Repository, record: Record, slot: int, entry: str, now: datetime) -> None:
    """Store one entry (one call). A storage error is logged: history never fails a run."""
    stored = Record(parent_of(record.parent), entry_name(record.name, slot), entry, PARKED_AT)
    try:
        await repository.register([stored], now=now, mode=RegisterMode.FORCE)
    except Exception as exc:  # logged: the run's own outcome is stored separately
        logger.warning("Could not store the history of %s/%s: %s", record.parent, record.name, exc)


async def read(
    repository: Repository, parent: str, name: str, runs: int, policies: Policies, now: datetime
) -> list[HistoryEntry]:
    """The entries of one record, newest first (at most ``policies.history``, none older than its max age)."""
    size = policies.history
    slots = [(runs - 1 - back) % size for back in range(min(runs, size))]
    found: dict[int, Record | None] = {}

    async def get(slot: int) -> None:
        found[slot] = await repository.get(parent_of(parent), entry_name(name, slot))

    async with anyio.create_task_group() as group:
        for slot in slots:
            group.start_soon(get, slot)
    entries: list[HistoryEntry] = []
    for slot in slots:
        stored = found.get(slot)
        entry = None if stored is None else decode(stored.spec)
        if entry is None:
            continue
        if policies.history_max_age is not None and entry.finished_at < now - policies.history_max_age:
            await repository.delete(parent_of(parent), entry_name(name, slot))
            continue
        entries.append(entry)
    return entries


__all__ = ["PROCESS", "decode", "encode", "entry_name", "parent_of", "read", "write"]
