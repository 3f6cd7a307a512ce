"""Records whose stored times Python cannot hold, and data errors no retry can fix.

A ``timestamptz`` column accepts 'infinity', '-infinity' and years from 4713 BC to 294276 AD; Python's
datetime holds years 1 to 9999. Such a row (a hand edit, a foreign writer) must come back with
``Record.corrupt`` set, never fail a call or hold up the other records.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from pyncette.abc import PARKED_AT, Completion, Record, RegisterMode, Repository
from pyncette.errors import ConfigurationError
from pyncette_postgres import PostgresRepository, backend
from pyncette_postgres._schema import ddl, quote

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
LEASE = T0 + timedelta(minutes=1)


def rec(name: str, at: datetime = T0, spec: str | None = "{}") -> Record:
    return Record(parent="p", name=name, spec=spec, scheduled_at=at)


@pytest.fixture
async def repository(postgres_url: str) -> AsyncIterator[PostgresRepository]:
    settings = backend.settings({"postgres_url": postgres_url, "postgres_table_name": "corrupt_" + _unique()})
    try:
        async with backend.open(settings) as repo:
            assert isinstance(repo, PostgresRepository)
            yield repo
    finally:
        await backend.purge(settings)


def _unique() -> str:
    return uuid.uuid4().hex[:12]


async def damage(admin: asyncpg.Connection, repo: PostgresRepository, name: str, assignment: str) -> None:
    await admin.execute(f"UPDATE {quote(repo.table_name)} SET {assignment} WHERE parent = 'p' AND name = $1", name)


#: Damage that leaves the record due (it is claimed, leased and parked by the runtime) ...
DUE = {
    "minus-infinity": "scheduled_at = '-infinity'",
    "before-year-1": "scheduled_at = '4000-01-01 BC'",
}
#: ... and damage that does not (it is never claimed; get and list show it).
NOT_DUE = {
    "infinity": "scheduled_at = 'infinity'",
    "after-9999": "scheduled_at = '10000-01-01'",
    "lease-infinity": "locked_until = 'infinity', locked_by = 'someone'",
    "lease-after-9999": "locked_until = '12000-06-01', locked_by = 'someone'",
}
ALL = {**DUE, **NOT_DUE}


@pytest.mark.parametrize("kind", list(ALL))
async def test_get_and_list_return_the_record_marked_corrupt(
    repository: PostgresRepository, admin: asyncpg.Connection, kind: str
) -> None:
    await repository.register([rec("a"), rec("bad"), rec("z")], now=T0, mode=RegisterMode.CREATE)
    await damage(admin, repository, "bad", ALL[kind])
    bad = await repository.get("p", "bad")
    assert bad is not None and bad.corrupt is not None, bad
    assert bad.name == "bad" and bad.spec == "{}"
    if kind.startswith("lease"):
        assert bad.scheduled_at == T0 and bad.locked_until is None and bad.locked_by == "someone"
        assert "locked_until" in bad.corrupt
    else:
        assert bad.scheduled_at == PARKED_AT and "scheduled_at" in bad.corrupt
    good = await repository.get("p", "a")
    assert good == rec("a")
    page, continuation = await repository.list_page("p", limit=2, continuation=None)
    assert [(r.name, r.corrupt is not None) for r in page] == [("a", False), ("bad", True)]
    page, continuation = await repository.list_page("p", limit=2, continuation=continuation)
    assert [(r.name, r.corrupt) for r in page] == [("z", None)] and continuation is None


@pytest.mark.parametrize("kind", list(DUE))
async def test_a_due_corrupt_record_is_leased_with_the_others_and_parks(
    repository: PostgresRepository, admin: asyncpg.Connection, kind: str
) -> None:
    await repository.register([rec("a"), rec("bad"), rec("z")], now=T0, mode=RegisterMode.CREATE)
    await damage(admin, repository, "bad", DUE[kind])
    claimed = await repository.claim("p", now=T0, limit=10, lease_until=LEASE, token="t")
    by_name = {r.name: r for r in claimed}
    assert sorted(by_name) == ["a", "bad", "z"]
    assert by_name["a"].corrupt is None and by_name["z"].corrupt is None
    bad = by_name["bad"]
    assert bad.corrupt is not None and "scheduled_at" in bad.corrupt
    assert (bad.scheduled_at, bad.locked_until, bad.locked_by) == (PARKED_AT, LEASE, "t")
    # The runtime parks it: that commit must succeed whatever the stored time holds.
    assert await repository.commit([Completion("p", "bad", "t", PARKED_AT)]) == [True]
    parked = await repository.get("p", "bad")
    assert parked is not None and parked.corrupt is None
    assert (parked.scheduled_at, parked.locked_until, parked.locked_by) == (PARKED_AT, None, None)
    later = await repository.claim("p", now=T0 + timedelta(days=365), limit=10, lease_until=LEASE, token="u")
    assert sorted(r.name for r in later) == ["a", "z"]  # their leases expired; the parked one is not due


@pytest.mark.parametrize("kind", list(NOT_DUE))
async def test_a_corrupt_record_that_is_not_due_holds_up_nothing(
    repository: PostgresRepository, admin: asyncpg.Connection, kind: str
) -> None:
    await repository.register([rec("a"), rec("bad"), rec("z")], now=T0, mode=RegisterMode.CREATE)
    await damage(admin, repository, "bad", NOT_DUE[kind])
    claimed = await repository.claim("p", now=T0 + timedelta(days=3650), limit=10, lease_until=LEASE, token="t")
    assert [(r.name, r.corrupt) for r in claimed] == [("a", None), ("z", None)]


@pytest.mark.parametrize("kind", list(ALL))
async def test_register_overwrites_a_corrupt_record_except_in_create_mode(
    repository: PostgresRepository, admin: asyncpg.Connection, kind: str
) -> None:
    await repository.register([rec("bad", spec='"old"')], now=T0, mode=RegisterMode.CREATE)
    await damage(admin, repository, "bad", ALL[kind])
    later = T0 + timedelta(hours=1)
    assert await repository.register([rec("bad", later, '"new"')], now=T0, mode=RegisterMode.CREATE) == [False]
    kept = await repository.get("p", "bad")
    assert kept is not None and kept.corrupt is not None and kept.spec == '"old"'
    assert await repository.register([rec("bad", later, '"new"')], now=T0, mode=RegisterMode.UPDATE) == [True]
    assert await repository.get("p", "bad") == rec("bad", later, '"new"')
    await damage(admin, repository, "bad", ALL[kind])
    assert await repository.register([rec("bad", T0, '"forced"')], now=T0, mode=RegisterMode.FORCE) == [True]
    assert await repository.get("p", "bad") == rec("bad", T0, '"forced"')


async def test_the_corrupt_hook_leaves_a_due_record_the_driver_cannot_read(
    repository: PostgresRepository, admin: asyncpg.Connection
) -> None:
    await repository.register([rec("a"), rec("bad")], now=T0, mode=RegisterMode.CREATE)
    await repository.corrupt("p", "bad")
    # The driver's own decoding fails on it (that is the damage); the repository's does not.
    raw = await admin.fetchval(f"SELECT scheduled_at::text FROM {quote(repository.table_name)} WHERE name = 'bad'")
    assert raw == "-infinity"
    bad = await repository.get("p", "bad")
    assert bad is not None and bad.corrupt is not None
    claimed = await repository.claim("p", now=T0, limit=10, lease_until=LEASE, token="t")
    assert sorted((r.name, r.corrupt is not None, r.locked_by) for r in claimed) == [
        ("a", False, "t"),
        ("bad", True, "t"),
    ]


async def test_times_keep_microseconds_and_the_extremes_python_can_hold(repository: Repository) -> None:
    times = [
        datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2000, 1, 1, tzinfo=timezone.utc),
        datetime(2030, 6, 1, 12, 0, 0, 123457, tzinfo=timezone.utc),
        PARKED_AT,
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ]
    records = [rec(f"r{i}", at) for i, at in enumerate(times)]
    await repository.register(records, now=T0, mode=RegisterMode.CREATE)
    for record in records:
        assert await repository.get("p", record.name) == record
    # Other time zones are stored as the same instant.
    plus_two = datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    await repository.register([rec("tz", plus_two)], now=T0, mode=RegisterMode.CREATE)
    stored = await repository.get("p", "tz")
    assert stored is not None and stored.scheduled_at == T0 and stored.scheduled_at.tzinfo == timezone.utc


# --- data errors -------------------------------------------------------------------------------------


async def test_data_errors_are_configuration_errors(postgres_url: str, admin: asyncpg.Connection) -> None:
    # A hand-made table with a shorter name column: a longer name fails the same way every time.
    table = "narrow_" + _unique()
    await admin.execute(ddl(table).replace('name         text COLLATE "C"', 'name varchar(10) COLLATE "C"'))
    settings = backend.settings(
        {"postgres_url": postgres_url, "postgres_table_name": table, "postgres_skip_table_create": True}
    )
    try:
        async with backend.open(settings) as repo:
            assert await repo.register([rec("short")], now=T0, mode=RegisterMode.CREATE) == [True]
            with pytest.raises(ConfigurationError, match="too long"):
                await repo.register([rec("much-too-long-a-name")], now=T0, mode=RegisterMode.CREATE)
            with pytest.raises(ConfigurationError, match="0x00"):  # text cannot hold NUL
                await repo.register([rec("nul", spec="a\0b")], now=T0, mode=RegisterMode.FORCE)
            with pytest.raises(ConfigurationError, match="query argument"):  # refused before it is sent
                await repo.register([rec("odd", "soon")], now=T0, mode=RegisterMode.FORCE)  # type: ignore[arg-type]
            # The repository is still fine.
            assert await repo.get("p", "short") == rec("short")
    finally:
        await backend.purge(settings)


async def test_a_key_too_large_for_the_index_is_a_configuration_error(repository: PostgresRepository) -> None:
    with pytest.raises(ConfigurationError, match="index row"):
        await repository.register([rec(secrets.token_urlsafe(6000))], now=T0, mode=RegisterMode.CREATE)
    assert await repository.register([rec("fine")], now=T0, mode=RegisterMode.CREATE) == [True]
