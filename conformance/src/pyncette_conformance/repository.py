"""Contract tests for :class:`pyncette.abc.Repository`, independent of the runtime.

They exercise each atomic transition directly, so a failure points at the
backend method that broke the contract.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import ClassVar

import anyio
import pytest

from pyncette.abc import PARKED_AT, Completion, Lease, Record, RegisterMode, Repository

from .base import ConformanceBase

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)


def rec(
    name: str, at: datetime = T0, *, parent: str = "p", spec: str | None = '{"v": 1}', state: str | None = None
) -> Record:
    return Record(parent=parent, name=name, spec=spec, scheduled_at=at, state=state)


async def claim(
    repo: Repository, parent: str = "p", *, now: datetime = T0, limit: int = 100, token: str = "tok"
) -> list[Record]:
    return await repo.claim(parent, now=now, limit=limit, lease_until=now + LEASE, token=token)


async def corrupt_or_skip(repository: Repository, parent: str, name: str) -> None:
    try:
        await repository.corrupt(parent, name)
    except NotImplementedError:
        pytest.skip("backend does not implement the Repository.corrupt testing hook")


class RepositoryContract(ConformanceBase):
    """Subclass (or run through the plugin) to check a repository's atomic operations."""

    #: Records in the claim-cost test; an emulator too slow to store 20,000 may lower it (not below 5,000).
    claim_cost_records: ClassVar[int] = 20_000

    async def test_register_create_keeps_existing(self, repository: Repository) -> None:
        assert await repository.register([rec("a")], now=T0, mode=RegisterMode.CREATE) == [True]
        later = rec("a", T0 + timedelta(hours=1), spec='{"v": 2}')
        assert await repository.register([later], now=T0, mode=RegisterMode.CREATE) == [False]
        stored = await repository.get("p", "a")
        assert stored is not None and stored.spec == '{"v": 1}' and stored.scheduled_at == T0

    async def test_register_update_keeps_sooner_time_and_replaces_spec(self, repository: Repository) -> None:
        await repository.register([rec("a", T0 + timedelta(hours=1))], now=T0, mode=RegisterMode.UPDATE)
        await repository.register(
            [rec("a", T0 + timedelta(hours=2), spec='{"v": 2}')], now=T0, mode=RegisterMode.UPDATE
        )
        stored = await repository.get("p", "a")
        assert stored is not None
        assert stored.scheduled_at == T0 + timedelta(hours=1)
        assert stored.spec == '{"v": 2}'
        await repository.register([rec("a", T0 + timedelta(minutes=5))], now=T0, mode=RegisterMode.UPDATE)
        stored = await repository.get("p", "a")
        assert stored is not None and stored.scheduled_at == T0 + timedelta(minutes=5)

    async def test_register_update_refuses_locked_and_force_clears_lock(self, repository: Repository) -> None:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        assert len(await claim(repository)) == 1
        assert await repository.register([rec("a", spec="{}")], now=T0, mode=RegisterMode.UPDATE) == [False]
        stored = await repository.get("p", "a")
        assert stored is not None and stored.locked_by == "tok" and stored.spec == '{"v": 1}'
        # Once the lease has expired the record is no longer locked.
        after = T0 + LEASE + timedelta(seconds=1)
        assert await repository.register([rec("a", spec="{}")], now=after, mode=RegisterMode.UPDATE) == [True]
        assert len(await claim(repository, now=after, token="t2")) == 1
        assert await repository.register(
            [rec("a", T0 + timedelta(days=1), spec='"f"')], now=after, mode=RegisterMode.FORCE
        ) == [True]
        stored = await repository.get("p", "a")
        assert stored is not None
        assert (stored.locked_by, stored.locked_until, stored.spec) == (None, None, '"f"')
        assert stored.scheduled_at == T0 + timedelta(days=1)
        assert await repository.commit([Completion("p", "a", "t2", T0)]) == [False]

    async def test_claim_leases_only_due_unlocked_records_earliest_first(self, repository: Repository) -> None:
        records = [rec(f"r{i}", T0 - timedelta(seconds=i)) for i in range(5)]
        records.append(rec("future", T0 + timedelta(seconds=1)))
        await repository.register(records, now=T0, mode=RegisterMode.UPDATE)
        first = await claim(repository, limit=2)
        assert [r.name for r in first] == ["r4", "r3"]
        for r in first:
            assert r.locked_by == "tok" and r.locked_until == T0 + LEASE and r.spec == '{"v": 1}'
        rest = await claim(repository, token="other")
        assert sorted(r.name for r in rest) == ["r0", "r1", "r2"]
        assert await claim(repository, token="third") == []
        stored = await repository.get("p", "r4")
        assert stored is not None and stored.locked_by == "tok"

    async def test_expired_lease_can_be_claimed_again(self, repository: Repository) -> None:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        await claim(repository, token="first")
        assert await claim(repository, now=T0 + LEASE - timedelta(milliseconds=1), token="second") == []
        again = await claim(repository, now=T0 + LEASE, token="second")
        assert [r.locked_by for r in again] == ["second"]
        assert await repository.commit([Completion("p", "a", "first", T0 + timedelta(hours=1))]) == [False]
        assert await repository.extend(Lease("p", "a", "first"), lease_until=T0 + timedelta(hours=1)) is False

    async def test_commit_reschedules_deletes_and_reports_lost_leases(self, repository: Repository) -> None:
        await repository.register([rec("a"), rec("b"), rec("c")], now=T0, mode=RegisterMode.UPDATE)
        await claim(repository)
        results = await repository.commit(
            [
                Completion("p", "a", "tok", T0 + timedelta(minutes=1)),
                Completion("p", "b", "tok", None),
                Completion("p", "c", "wrong", T0 + timedelta(minutes=1)),
                Completion("p", "missing", "tok", None),
            ]
        )
        assert results == [True, True, False, False]
        a = await repository.get("p", "a")
        assert a is not None and (a.scheduled_at, a.locked_by, a.locked_until) == (
            T0 + timedelta(minutes=1),
            None,
            None,
        )
        assert await repository.get("p", "b") is None
        c = await repository.get("p", "c")
        assert c is not None and c.locked_by == "tok" and c.scheduled_at == T0
        # "a" is due again; "c" was never committed, and its lease has expired by then.
        assert sorted(r.name for r in await claim(repository, now=T0 + timedelta(minutes=1), token="n")) == ["a", "c"]

    async def test_unlock_and_extend(self, repository: Repository) -> None:
        await repository.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
        await claim(repository)
        assert await repository.extend(Lease("p", "a", "tok"), lease_until=T0 + timedelta(minutes=10)) is True
        a = await repository.get("p", "a")
        assert a is not None and a.locked_until == T0 + timedelta(minutes=10)
        assert await repository.unlock([Lease("p", "b", "tok"), Lease("p", "a", "nope")]) == [True, False]
        assert [r.name for r in await claim(repository, token="x")] == ["b"]
        assert await repository.extend(Lease("p", "gone", "tok"), lease_until=T0) is False

    async def test_delete_get_and_parent_isolation(self, repository: Repository) -> None:
        await repository.register([rec("a", parent="one"), rec("a", parent="two")], now=T0, mode=RegisterMode.UPDATE)
        assert [r.parent for r in await claim(repository, "one")] == ["one"]
        assert await repository.delete("two", "a") is True
        assert await repository.delete("two", "a") is False
        assert await repository.get("two", "a") is None
        assert await repository.get("one", "a") is not None
        assert await claim(repository, "two") == []

    async def test_delete_many_reports_each_key(self, repository: Repository) -> None:
        early = T0 - timedelta(minutes=1)
        records = [
            rec("a", parent="one"),
            rec("b", parent="one"),
            rec("a", parent="two"),
            rec("x", early, parent="one"),
        ]
        await repository.register(records, now=T0, mode=RegisterMode.UPDATE)
        assert [r.name for r in await claim(repository, "one", limit=1)] == ["x"]  # deleted whatever its lease
        keys = [("one", "a"), ("two", "a"), ("one", "missing"), ("one", "a"), ("one", "x")]
        assert await repository.delete_many(keys) == [True, True, False, False, True]
        assert await repository.get("one", "b") is not None
        for parent, name in keys:
            assert await repository.get(parent, name) is None
        assert await repository.delete_many([]) == []

    async def test_list_pages_cover_every_record_once(self, repository: Repository) -> None:
        names = [f"instance-{i:05d}" for i in range(1050)]
        for start in range(0, len(names), 500):
            chunk = [rec(n, parent="big") for n in names[start : start + 500]]
            await repository.register(chunk, now=T0, mode=RegisterMode.UPDATE)
        await repository.register([rec("other", parent="small")], now=T0, mode=RegisterMode.UPDATE)
        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            page, token = await repository.list_page("big", limit=100, continuation=token)
            assert len(page) <= 100
            seen.extend(r.name for r in page)
            pages += 1
            if token is None:
                break
            assert pages < 100
        assert sorted(seen) == names
        assert len(seen) == len(set(seen))
        empty, token = await repository.list_page("nothing-here", limit=10, continuation=None)
        assert (empty, token) == ([], None)

    async def test_concurrent_claims_never_share_a_record(self, repository: Repository) -> None:
        await repository.register([rec(f"r{i}") for i in range(300)], now=T0, mode=RegisterMode.UPDATE)
        results: dict[int, list[Record]] = {}

        async def worker(i: int) -> None:
            got: list[Record] = []
            # Bounded, so a backend that hands out records twice fails instead of looping forever.
            for _ in range(100):
                batch = await claim(repository, limit=7, token=f"w{i}")
                if not batch:
                    break
                got.extend(batch)
            results[i] = got

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(worker, i)
        names = [r.name for got in results.values() for r in got]
        assert len(names) == 300
        assert len(set(names)) == 300

    async def test_times_round_trip_with_millisecond_precision(self, repository: Repository) -> None:
        at = datetime(2031, 6, 30, 23, 59, 59, 123000, tzinfo=timezone.utc)
        await repository.register([rec("a", at)], now=T0, mode=RegisterMode.UPDATE)
        stored = await repository.get("p", "a")
        assert stored is not None
        assert stored.scheduled_at.utcoffset() == timedelta(0)
        assert abs(stored.scheduled_at - at) < timedelta(milliseconds=1)
        assert await claim(repository, now=at - timedelta(milliseconds=2)) == []
        assert len(await claim(repository, now=at + timedelta(milliseconds=1))) == 1

    async def test_static_record_without_spec(self, repository: Repository) -> None:
        await repository.register([rec("s", spec=None)], now=T0, mode=RegisterMode.CREATE)
        claimed = await claim(repository)
        assert [(r.name, r.spec) for r in claimed] == [("s", None)]

    async def test_names_with_unusual_characters(self, repository: Repository) -> None:
        names = ["with space", "ünïcødé-名前", "colon:and/slash", "{braces}", "quote'\"", "x" * 200]
        await repository.register([rec(n, parent="odd/parent:1") for n in names], now=T0, mode=RegisterMode.UPDATE)
        claimed = await claim(repository, "odd/parent:1")
        assert sorted(r.name for r in claimed) == sorted(names)
        for n in names:
            assert await repository.get("odd/parent:1", n) is not None

    async def test_write_raw_spec_hook(self, repository: Repository) -> None:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        try:
            await repository.write_raw_spec("p", "a", "{not json")
        except NotImplementedError:
            pytest.skip("backend does not implement the write_raw_spec testing hook")
        stored = await repository.get("p", "a")
        assert stored is not None and stored.spec == "{not json"

    async def test_corrupt_record_affects_itself_alone(self, repository: Repository) -> None:
        await repository.register(
            [rec(n, T0 - timedelta(seconds=i)) for i, n in enumerate("abcde")], now=T0, mode=RegisterMode.UPDATE
        )
        await corrupt_or_skip(repository, "p", "c")
        # Reads never raise for it.
        stored = await repository.get("p", "c")
        assert stored is not None and stored.corrupt, stored
        page, _ = await repository.list_page("p", limit=10, continuation=None)
        assert {r.name: bool(r.corrupt) for r in page} == {"a": False, "b": False, "c": True, "d": False, "e": False}
        # One claim: every healthy record leased as usual, the corrupt one reported.
        claimed = {r.name: r for r in await claim(repository, limit=10)}
        assert set(claimed) == set("abcde")
        for name in "abde":
            assert claimed[name].corrupt is None and claimed[name].locked_by == "tok"
        bad = claimed["c"]
        assert bad.corrupt
        if bad.locked_by is not None:
            # Leased: the runtime parks it with a commit, which must work whatever the stored times hold.
            assert bad.locked_by == "tok"
            assert await repository.commit([Completion("p", "c", "tok", PARKED_AT)]) == [True]
            parked = await repository.get("p", "c")
            assert parked is not None and parked.scheduled_at == PARKED_AT and parked.locked_by is None
        # Either way it is never handed out again (until it is registered anew); the others' leases expire.
        later = T0 + timedelta(days=365)
        assert sorted(r.name for r in await claim(repository, now=later, limit=10, token="t2")) == ["a", "b", "d", "e"]

    async def test_register_overwrites_a_corrupt_record_except_in_create_mode(self, repository: Repository) -> None:
        await repository.register([rec("x")], now=T0, mode=RegisterMode.UPDATE)
        await corrupt_or_skip(repository, "p", "x")
        assert await repository.register([rec("x", spec='{"v": 9}')], now=T0, mode=RegisterMode.CREATE) == [False]
        assert (await repository.get("p", "x")).corrupt  # type: ignore[union-attr]
        fresh_at = T0 + timedelta(minutes=1)
        assert await repository.register([rec("x", fresh_at, spec='{"v": 2}')], now=T0, mode=RegisterMode.UPDATE) == [
            True
        ]
        stored = await repository.get("p", "x")
        assert stored is not None and stored.corrupt is None
        assert (stored.spec, stored.scheduled_at, stored.locked_by) == ('{"v": 2}', fresh_at, None)
        assert [r.name for r in await claim(repository, now=fresh_at)] == ["x"]
        await corrupt_or_skip(repository, "p", "x")
        assert await repository.register([rec("x", spec='"f"')], now=T0, mode=RegisterMode.FORCE) == [True]
        stored = await repository.get("p", "x")
        assert stored is not None and stored.corrupt is None and stored.spec == '"f"'

    async def test_parked_time_round_trips(self, repository: Repository) -> None:
        await repository.register([rec("far", PARKED_AT)], now=T0, mode=RegisterMode.UPDATE)
        stored = await repository.get("p", "far")
        assert stored is not None and stored.scheduled_at == PARKED_AT and stored.corrupt is None
        before = PARKED_AT - LEASE - timedelta(seconds=1)
        assert await repository.claim("p", now=before, limit=10, lease_until=before + LEASE, token="t") == []

    async def test_state_round_trips_through_register_claim_get_and_list(self, repository: Repository) -> None:
        state = '{"v": 1, "attempt": 2, "note": "ünïcødé \\"quoted\\" ' + "x" * 2000 + '"}'
        records = [rec("with", state=state), rec("without"), rec("static", spec=None, state='{"v":1}')]
        assert await repository.register(records, now=T0, mode=RegisterMode.CREATE) == [True, True, True]
        expected = {"with": state, "without": None, "static": '{"v":1}'}
        for name, value in expected.items():
            stored = await repository.get("p", name)
            assert stored is not None and stored.state == value, (name, stored)
        page, _ = await repository.list_page("p", limit=10, continuation=None)
        assert {r.name: r.state for r in page} == expected
        assert {r.name: r.state for r in await claim(repository)} == expected
        # CREATE of an existing record leaves its state alone; FORCE overwrites it.
        assert await repository.register([rec("with", state='"other"')], now=T0, mode=RegisterMode.CREATE) == [False]
        assert (await repository.get("p", "with")).state == state  # type: ignore[union-attr]
        assert await repository.register([rec("with", state='"forced"')], now=T0, mode=RegisterMode.FORCE) == [True]
        assert (await repository.get("p", "with")).state == '"forced"'  # type: ignore[union-attr]
        assert await repository.register([rec("with")], now=T0, mode=RegisterMode.FORCE) == [True]
        assert (await repository.get("p", "with")).state is None  # type: ignore[union-attr]

    async def test_register_update_keeps_the_stored_state(self, repository: Repository) -> None:
        await repository.register(
            [rec("a", T0 + timedelta(hours=1), state='{"n": 1}')], now=T0, mode=RegisterMode.UPDATE
        )
        stored = await repository.get("p", "a")
        assert stored is not None and stored.state == '{"n": 1}'
        assert await repository.register(
            [rec("a", T0, spec='{"v": 2}', state='{"n": 2}')], now=T0, mode=RegisterMode.UPDATE
        ) == [True]
        stored = await repository.get("p", "a")
        assert stored is not None
        assert (stored.spec, stored.scheduled_at, stored.state) == ('{"v": 2}', T0, '{"n": 1}')

    async def test_commit_replaces_the_state_or_keeps_it(self, repository: Repository) -> None:
        await repository.register(
            [rec("keep", state='"old"'), rec("replace", state='"old"'), rec("gone", state='"old"')],
            now=T0,
            mode=RegisterMode.UPDATE,
        )
        await claim(repository)
        later = T0 + timedelta(minutes=1)
        results = await repository.commit(
            [
                Completion("p", "keep", "tok", later),
                Completion("p", "replace", "tok", later, state='{"attempt": 3}'),
                Completion("p", "gone", "tok", None, state='"ignored"'),
            ]
        )
        assert results == [True, True, True]
        keep, replaced = await repository.get("p", "keep"), await repository.get("p", "replace")
        assert keep is not None and (keep.state, keep.scheduled_at, keep.locked_by) == ('"old"', later, None)
        assert replaced is not None
        assert (replaced.state, replaced.scheduled_at, replaced.locked_by) == ('{"attempt": 3}', later, None)
        assert await repository.get("p", "gone") is None
        # The next claim returns the state the commit stored.
        assert {r.name: r.state for r in await claim(repository, now=later, token="t2")} == {
            "keep": '"old"',
            "replace": '{"attempt": 3}',
        }

    async def test_commit_with_a_stale_token_changes_neither_schedule_nor_state(self, repository: Repository) -> None:
        await repository.register([rec("a", state='"first"')], now=T0, mode=RegisterMode.UPDATE)
        await claim(repository, token="old")
        after = T0 + LEASE
        assert [r.locked_by for r in await claim(repository, now=after, token="new")] == ["new"]
        stale = [
            Completion("p", "a", "old", T0 + timedelta(hours=1), state='"stale"'),
            Completion("p", "a", "old", T0 + timedelta(hours=2), state='"stale"', release=False),
            Completion("p", "a", "old", None, state='"stale"'),
        ]
        assert await repository.commit(stale) == [False, False, False]
        stored = await repository.get("p", "a")
        assert stored is not None
        assert (stored.scheduled_at, stored.state, stored.locked_by) == (T0, '"first"', "new")
        assert stored.locked_until == after + LEASE
        assert await repository.commit([Completion("p", "a", "new", T0 + timedelta(hours=1), state='"n"')]) == [True]
        stored = await repository.get("p", "a")
        assert stored is not None and stored.state == '"n"'

    async def test_commit_without_release_keeps_the_lease(self, repository: Repository) -> None:
        await repository.register([rec("a"), rec("b")], now=T0, mode=RegisterMode.UPDATE)
        await claim(repository, token="holder")
        soon = T0 + timedelta(seconds=5)
        results = await repository.commit(
            [
                Completion("p", "a", "holder", soon, state='"running"', release=False),
                Completion("p", "b", "holder", soon, release=False),
            ]
        )
        assert results == [True, True]
        stored = await repository.get("p", "a")
        assert stored is not None
        assert (stored.scheduled_at, stored.locked_by, stored.locked_until, stored.state) == (
            soon,
            "holder",
            T0 + LEASE,
            '"running"',
        )
        # Due again, but still leased: no other claim gets it before the lease expires.
        assert await claim(repository, now=soon, token="other") == []
        assert await claim(repository, now=T0 + LEASE - timedelta(milliseconds=1), token="other") == []
        # The holder keeps control: extend, commit again, unlock.
        assert await repository.extend(Lease("p", "a", "holder"), lease_until=T0 + timedelta(minutes=5)) is True
        # Once its lease expires, the record kept without an extension is claimable like any other.
        got = await claim(repository, now=T0 + LEASE + timedelta(seconds=1), token="other")
        assert [(r.name, r.locked_by) for r in got] == [("b", "other")]
        assert await repository.delete("p", "b") is True
        assert await claim(repository, now=T0 + timedelta(minutes=4), token="third") == []
        again = T0 + timedelta(minutes=1)
        assert await repository.commit([Completion("p", "a", "holder", again, release=False)]) == [True]
        stored = await repository.get("p", "a")
        assert stored is not None
        assert (stored.scheduled_at, stored.locked_by, stored.state) == (again, "holder", '"running"')
        assert await repository.unlock([Lease("p", "a", "holder")]) == [True]
        claimed = await claim(repository, now=T0 + timedelta(minutes=4), token="fourth")
        assert [(r.name, r.state, r.locked_by) for r in claimed] == [("a", '"running"', "fourth")]

    async def test_commit_without_release_to_after_the_lease_expiry(self, repository: Repository) -> None:
        await repository.register([rec("a")], now=T0, mode=RegisterMode.UPDATE)
        await claim(repository, token="holder")
        later = T0 + LEASE + timedelta(minutes=10)
        assert await repository.commit([Completion("p", "a", "holder", later, release=False)]) == [True]
        stored = await repository.get("p", "a")
        assert stored is not None
        assert (stored.scheduled_at, stored.locked_by, stored.locked_until) == (later, "holder", T0 + LEASE)
        # The lease has expired but the record is not due before its new time.
        assert await claim(repository, now=T0 + LEASE + timedelta(seconds=1), token="other") == []
        assert await claim(repository, now=later - timedelta(milliseconds=1), token="other") == []
        assert [r.locked_by for r in await claim(repository, now=later, token="other")] == ["other"]

    async def test_claim_cost_depends_on_due_records_not_on_all_records(self, repository: Repository) -> None:
        """A claim must walk only due records: compare claims among 20 and among 20,000 records not yet due.

        Timed on purpose (the only way to see a full scan from outside), as a ratio of medians measured in
        one run, with a bound generous enough for a noisy machine: a scanning backend is 50-1000x slower.
        """
        due = [rec(f"due-{i:04d}", T0 - timedelta(seconds=1)) for i in range(400)]
        await repository.register(due, now=T0, mode=RegisterMode.UPDATE)
        future = T0 + timedelta(days=30)

        async def median_claim(label: str) -> float:
            seconds = []
            for i in range(15):
                started = time.perf_counter()
                got = await claim(repository, limit=5, token=f"{label}{i}")
                seconds.append(time.perf_counter() - started)
                assert len(got) == 5
            return statistics.median(seconds)

        await repository.register([rec(f"later-{i}", future) for i in range(20)], now=T0, mode=RegisterMode.UPDATE)
        await median_claim("warm")
        small = await median_claim("small")
        names = [f"later-{i}" for i in range(20, self.claim_cost_records)]
        for start in range(0, len(names), 1000):
            chunk = [rec(n, future) for n in names[start : start + 1000]]
            await repository.register(chunk, now=T0, mode=RegisterMode.UPDATE)
        large = await median_claim("large")
        assert large < 8 * small + 0.01, (
            f"a claim took {large * 1000:.1f} ms among {self.claim_cost_records} records not yet due against "
            f"{small * 1000:.1f} ms among 20: claims must not scan records that are not due"
        )
