"""The control plane: pause and resume, run now, pruning, on any backend that declares ``control``.

:class:`ControlContract` checks the repository methods directly (:meth:`pyncette.abc.Repository.pause`,
``resume``, ``pauses``, ``reschedule``, ``parents``); :class:`ControlSuite` checks what an operator sees
through the API, with several apps sharing the storage on one virtual clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import ClassVar

import pyncette
from pyncette import Context
from pyncette.abc import Completion, Lease, PauseRule, Record, RegisterMode, Repository

from .base import ConformanceBase, requires
from .behaviour import START, AppFactory, S, offsets
from .repository import LEASE, T0, claim, rec

#: Names with every character a backend might treat as special in a pattern (SQL LIKE, Redis glob, regex).
ODD = ["a%b", "a_b", "a*b", "a?b", "a[b]", "a\\b", "a.b", "a b", "a'b", "a:b"]


def names(records: list[Record]) -> list[str]:
    return sorted(r.name for r in records)


async def register(repo: Repository, *records: Record, mode: RegisterMode = RegisterMode.CREATE) -> None:
    assert all(await repo.register(list(records), now=T0, mode=mode))


@requires("control")
class ControlContract(ConformanceBase):
    """The control-plane methods of :class:`pyncette.abc.Repository`, one transition at a time."""

    #: Records in the bulk pause test; an emulator too slow to write 2,000 may lower it (not below 200).
    bulk_records: ClassVar[int] = 2_000

    async def test_pause_prefix_holds_matching_records_only(self, repository: Repository) -> None:
        await register(repository, *(rec(n) for n in ["ab", "abc", "b", "xab"]), rec("ab", parent="other"))
        matched = await repository.pause(PauseRule("p", "ab", True), now=T0)
        assert matched in (2, None)
        assert names(await claim(repository)) == ["b", "xab"]
        assert names(await claim(repository, "other")) == ["ab"]  # other parents are not held

    async def test_pause_exact_name_does_not_hold_longer_names(self, repository: Repository) -> None:
        await register(repository, rec("a"), rec("ab"), rec("b"))
        assert await repository.pause(PauseRule("p", "a", False), now=T0) in (1, None)
        assert names(await claim(repository)) == ["ab", "b"]

    async def test_whole_parent_pause_holds_records_registered_later(self, repository: Repository) -> None:
        await register(repository, rec("a"))
        assert await repository.pause(PauseRule("p", "", True), now=T0) in (1, None)
        await register(repository, rec("b"))
        await register(repository, rec("c"), mode=RegisterMode.UPDATE)
        await register(repository, rec("d"), rec("a", T0 - timedelta(hours=1)), mode=RegisterMode.FORCE)
        assert await claim(repository, now=T0 + timedelta(days=1)) == []
        assert await repository.resume("p", "", prefix=True, now=T0) is True
        claimed = await claim(repository)
        assert names(claimed) == ["a", "b", "c", "d"]
        # Resumed records keep their stored times: the earliest is claimed first.
        assert claimed[0].name == "a" and claimed[0].scheduled_at == T0 - timedelta(hours=1)

    async def test_resume_releases_at_the_stored_time(self, repository: Repository) -> None:
        later = T0 + LEASE / 3  # "b", claimed at T0, is still leased then
        await register(repository, rec("a", later), rec("b"))
        await repository.pause(PauseRule("p", "", True), now=T0)
        assert await repository.resume("p", "", prefix=True, now=T0) is True
        assert names(await claim(repository)) == ["b"]
        assert names(await claim(repository, now=later)) == ["a"]

    async def test_overlapping_rules_hold_until_the_last_is_removed(self, repository: Repository) -> None:
        await register(repository, rec("ab"), rec("ac"))
        await repository.pause(PauseRule("p", "a", True), now=T0)
        await repository.pause(PauseRule("p", "ab", False), now=T0)
        assert await repository.resume("p", "a", prefix=True, now=T0) is True
        assert names(await claim(repository)) == ["ac"]
        assert await repository.resume("p", "ab", prefix=False, now=T0) is True
        assert names(await claim(repository)) == ["ab"]

    async def test_resume_without_a_rule_is_false(self, repository: Repository) -> None:
        await register(repository, rec("a"))
        await repository.pause(PauseRule("p", "a", True), now=T0)
        assert await repository.resume("p", "a", prefix=False, now=T0) is False  # the exact rule was never set
        assert await repository.resume("q", "a", prefix=True, now=T0) is False
        assert await claim(repository) == []

    async def test_special_characters_are_plain_text(self, repository: Repository) -> None:
        others = ["axb", "ab", "a\\\\b", "a", "a%", "b%b"]
        await register(repository, *(rec(n) for n in ODD + others))
        for name in ODD:
            await repository.pause(PauseRule("p", name, True), now=T0)
        assert names(await claim(repository)) == sorted(others)
        for name in ODD:
            assert await repository.resume("p", name, prefix=True, now=T0)
            await repository.pause(PauseRule("p", name, False), now=T0)
        assert names(await claim(repository, now=T0 + LEASE * 3, token="t2")) == sorted(others)

    async def test_pauses_lists_rules_and_replaces_info(self, repository: Repository) -> None:
        await repository.pause(PauseRule("p", "", True, '{"note": "one"}'), now=T0)
        await repository.pause(PauseRule("p", "x", False), now=T0)
        await repository.pause(PauseRule("p", "", True, '{"note": "two"}'), now=T0)
        await repository.pause(PauseRule("q", "y", True, "{}"), now=T0)
        rules = sorted(await repository.pauses("p"), key=lambda r: (r.match, r.prefix))
        assert rules == [PauseRule("p", "", True, '{"note": "two"}'), PauseRule("p", "x", False, None)]
        assert await repository.pauses("nothing") == []

    async def test_a_held_leased_record_commits_and_stays_held(self, repository: Repository) -> None:
        await register(repository, rec("a"), rec("b"), rec("c"))
        leased = {r.name: r for r in await claim(repository)}
        await repository.pause(PauseRule("p", "", True), now=T0)
        assert await repository.extend(Lease("p", "a", "tok"), lease_until=T0 + 2 * LEASE)
        assert await repository.unlock([Lease("p", "b", "tok")]) == [True]
        done = Completion("p", "a", "tok", T0 + timedelta(minutes=1), state='{"s": 1}')
        assert await repository.commit([done, Completion("p", "c", "tok", None)]) == [True, True]
        assert leased.keys() == {"a", "b", "c"}
        assert await claim(repository, now=T0 + timedelta(hours=1), token="t2") == []
        stored = await repository.get("p", "a")
        assert stored is not None and stored.scheduled_at == T0 + timedelta(minutes=1) and stored.state == '{"s": 1}'
        assert await repository.get("p", "c") is None
        await repository.resume("p", "", prefix=True, now=T0)
        assert names(await claim(repository, now=T0 + timedelta(hours=1), token="t2")) == ["a", "b"]

    async def test_a_held_record_under_an_unexpired_lease_stays_leased_after_resume(
        self, repository: Repository
    ) -> None:
        await register(repository, rec("a"))
        await claim(repository)
        await repository.pause(PauseRule("p", "a", False), now=T0)
        await repository.resume("p", "a", prefix=False, now=T0)
        assert await claim(repository, now=T0 + LEASE / 2, token="t2") == []
        assert names(await claim(repository, now=T0 + LEASE, token="t2")) == ["a"]

    async def test_held_records_are_read_and_listed(self, repository: Repository) -> None:
        await register(repository, rec("a", state='{"x": 1}'), rec("b"))
        await repository.pause(PauseRule("p", "", True), now=T0)
        stored = await repository.get("p", "a")
        assert stored is not None and stored.scheduled_at == T0 and stored.state == '{"x": 1}'
        page, token = await repository.list_page("p", limit=10, continuation=None)
        assert names(page) == ["a", "b"] and token is None
        assert await repository.delete("p", "b") is True
        assert await repository.get("p", "b") is None

    async def test_reschedule_sets_time_and_state_of_an_unleased_record(self, repository: Repository) -> None:
        later = T0 + timedelta(days=1, microseconds=123_457)
        await register(repository, rec("a", later, state='{"old": 1}'))
        assert await repository.reschedule("p", "a", expected=later, scheduled_at=T0, state='{"new": 1}', now=T0)
        stored = await repository.get("p", "a")
        assert stored is not None and stored.scheduled_at == T0 and stored.state == '{"new": 1}'
        assert stored.spec == '{"v": 1}'
        assert await repository.reschedule("p", "a", expected=T0, scheduled_at=later, state=None, now=T0)
        stored = await repository.get("p", "a")
        assert stored is not None and stored.scheduled_at == later and stored.state == '{"new": 1}'
        missing = await repository.reschedule("p", "missing", expected=T0, scheduled_at=T0, state=None, now=T0)
        assert missing is False

    async def test_reschedule_compares_the_stored_time(self, repository: Repository) -> None:
        at = T0 + timedelta(hours=1, microseconds=1)
        await register(repository, rec("a", at))
        for stale in (at - timedelta(microseconds=1), at + timedelta(microseconds=1), T0):
            assert not await repository.reschedule("p", "a", expected=stale, scheduled_at=T0, state="{}", now=T0)
        stored = await repository.get("p", "a")
        assert stored is not None and stored.scheduled_at == at and stored.state is None

    async def test_reschedule_refuses_a_leased_record(self, repository: Repository) -> None:
        await register(repository, rec("a"))
        [leased] = await claim(repository)
        refused = await repository.reschedule("p", "a", expected=T0, scheduled_at=T0 - LEASE, state="{}", now=T0)
        assert refused is False
        stored = await repository.get("p", "a")
        assert stored is not None and stored.scheduled_at == T0 and stored.state is None
        assert stored.locked_by == leased.locked_by == "tok"
        # Once the lease has expired it is no longer leased.
        assert await repository.reschedule("p", "a", expected=T0, scheduled_at=T0, state="{}", now=T0 + LEASE)

    async def test_reschedule_keeps_a_record_held(self, repository: Repository) -> None:
        later = T0 + timedelta(days=1)
        await register(repository, rec("a", later))
        await repository.pause(PauseRule("p", "a", False), now=T0)
        assert await repository.reschedule("p", "a", expected=later, scheduled_at=T0, state=None, now=T0)
        assert await claim(repository) == []
        await repository.resume("p", "a", prefix=False, now=T0)
        assert names(await claim(repository)) == ["a"]

    async def test_parents_pages_through_every_parent_once(self, repository: Repository) -> None:
        expected = [*sorted(f"parent-{i:02d}" for i in range(23)), "x/1", "x/static"]
        for parent in expected:
            await register(repository, rec("a", parent=parent), rec("b", parent=parent))
        await register(repository, rec("gone", parent="empty"))
        assert await repository.delete("empty", "gone")
        seen: list[str] = []
        token = None
        for _ in range(100):
            page, token = await repository.parents(limit=5, continuation=token)
            assert len(page) <= 5
            seen.extend(page)
            if token is None:
                break
        assert sorted(seen) == sorted(expected)
        assert len(seen) == len(set(seen))

    async def test_bulk_pause_holds_many_records(self, repository: Repository) -> None:
        count = max(self.bulk_records, 200)
        batch = [rec(f"i{n:05d}") for n in range(count)] + [rec("other")]
        for start in range(0, len(batch), 500):
            await register(repository, *batch[start : start + 500])
        assert await repository.pause(PauseRule("p", "i", True), now=T0) in (count, None)
        assert names(await claim(repository, limit=10)) == ["other"]
        assert await repository.resume("p", "i", prefix=True, now=T0)
        assert len(await claim(repository, limit=count, token="t2")) == count


@requires("control")
class ControlSuite(ConformanceBase):
    """Pausing, triggering and pruning through :class:`pyncette.PyncetteContext`, shared by every app."""

    async def test_pause_in_one_app_stops_every_app_within_one_poll(self, apps: AppFactory) -> None:
        runs: list[tuple[str, str, float]] = []

        def build(label: str) -> tuple[pyncette.Pyncette, pyncette.DynamicTask]:
            app = apps.app()

            @app.dynamic_task(interval=timedelta(minutes=1), coalesce="latest")
            async def job(context: Context) -> None:
                runs.append((label, context.task.name, (apps.clock.now() - START).total_seconds()))

            return app, job

        (one, job), (two, _) = build("one"), build("two")
        async with apps.run(one) as ctx, apps.run(two):
            await ctx.schedule_tasks(job, {f"i{n}": {} for n in range(6)})
            await apps.clock.advance(timedelta(seconds=61))
            assert len(runs) == 6
            assert await ctx.pause_task(job, note="maintenance", by="ops") in (6, None)
            paused_at = apps.clock.now()
            runs.clear()
            await apps.clock.advance(timedelta(minutes=10))
            assert runs == []  # neither app claims: the pause is stored
            [pause] = await ctx.list_pauses(job)
            assert (pause.task, pause.scope, pause.match, pause.note, pause.by) == (
                "job",
                "task",
                "",
                "maintenance",
                "ops",
            )
            assert pause.at == paused_at
            assert await ctx.resume_task(job) is True
            assert await ctx.resume_task(job) is False
            await apps.clock.advance(timedelta(seconds=11))  # one poll interval
        # Ten runs of each instance were missed; coalesce="latest" makes one of them, at once, in either app.
        assert sorted(name for _, name, _ in runs) == [f"i{n}" for n in range(6)]
        assert {label for label, _, _ in runs} <= {"one", "two"}
        assert all(661 <= at <= 671 for _, _, at in runs)

    async def test_pause_an_instance_or_a_prefix(self, apps: AppFactory) -> None:
        app = apps.app()
        runs: list[str] = []

        @app.dynamic_task(interval=timedelta(minutes=1))
        async def job(context: Context) -> None:
            runs.append(context.task.name)

        async with apps.run(app) as ctx:
            await ctx.schedule_tasks(job, {name: {} for name in ["eu-1", "eu-2", "us-1", "e"]})
            assert await ctx.pause_task(job, prefix="eu-") in (2, None)
            assert await ctx.pause_task(job, "us-1") in (1, None)
            await apps.clock.advance(timedelta(seconds=61))
            assert runs == ["e"]
            described = await ctx.describe_task(job, "eu-2")
            assert described is not None and described.paused is not None
            assert (described.paused.scope, described.paused.match) == ("prefix", "eu-")
            described = await ctx.describe_task(job, "e")
            assert described is not None and described.paused is None
            # A new instance under the paused prefix is held too.
            await ctx.schedule_task(job, "eu-3")
            assert await ctx.resume_task(job, "us-1")
            runs.clear()
            await apps.clock.advance(timedelta(seconds=60))
        # us-1 makes up the run it missed at once, then runs on schedule; eu-* stay paused.
        assert sorted(runs) == ["e", "us-1", "us-1"]

    async def test_pause_a_static_task(self, apps: AppFactory) -> None:
        app = apps.app()
        runs: list[float] = []

        @app.task(interval=timedelta(seconds=30))
        async def tick(context: Context) -> None:
            runs.append((context.scheduled_at - START).total_seconds())

        async with apps.run(app) as ctx:
            await apps.clock.advance(timedelta(seconds=31))
            await ctx.pause_task(tick, note="investigating")
            await apps.clock.advance(timedelta(minutes=5))
            assert runs == [30]
            described = await ctx.describe_task(tick)
            assert described is not None and described.paused is not None
            assert described.paused.note == "investigating" and described.paused.scope == "task"
            await ctx.resume_task(tick)
            await apps.clock.advance(timedelta(seconds=11))
        # The runs missed while paused are made up one after another (the default coalesce="all" of 1.x)
        # from where the schedule stood.
        assert runs[:3] == [30, 60, 90]

    async def test_run_now_adds_one_run_and_keeps_the_schedule(self, apps: AppFactory) -> None:
        runs: list[tuple[str, float]] = []

        def build(label: str) -> tuple[pyncette.Pyncette, pyncette.StaticTask]:
            app = apps.app()

            @app.task(interval=timedelta(hours=1))
            async def hourly(context: Context) -> None:
                runs.append((label, (context.scheduled_at - START).total_seconds()))

            return app, hourly

        (one, hourly), (two, _) = build("one"), build("two")
        async with one.create(clock=apps.clock) as ctx, apps.run(two):
            await apps.clock.advance(timedelta(minutes=20))
            assert await ctx.run_task_now(hourly) == "queued"
            described = await ctx.describe_task(hourly, next_runs=2)
            assert described is not None
            assert offsets([t.astimezone(START.tzinfo) for t in described.next_runs]) == [1200, 3600]
            await apps.clock.advance(timedelta(seconds=11))  # the other app claims it within one poll
            assert runs == [("two", 1200)]
            await apps.clock.advance(timedelta(minutes=41))
            state = await ctx.get_task(hourly)
        assert runs == [("two", 1200), ("two", 3600)]  # the regular run kept its time
        assert state is not None and offsets([state.scheduled_at.astimezone(START.tzinfo)]) == [7200]

    async def test_run_now_of_an_instance(self, apps: AppFactory) -> None:
        app = apps.app()
        runs: list[tuple[str, float, int]] = []

        @app.dynamic_task()
        async def report(context: Context) -> None:
            runs.append((context.task.name, (apps.clock.now() - START).total_seconds(), context.attempt))
            if len(runs) == 1:
                raise RuntimeError("the triggered run fails; it is not retried")

        async with apps.run(app) as ctx:
            await ctx.schedule_task(report, "q1", execute_at=START + timedelta(hours=1))
            assert await ctx.run_task_now(report, "q1") == "queued"
            await apps.clock.advance(timedelta(seconds=11))
            state = await ctx.get_task(report, "q1")
            assert state is not None and state.last_outcome == "failed" and state.attempt == 1
            assert offsets([state.scheduled_at]) == [3600]
            await apps.clock.advance(timedelta(hours=1))
            assert await ctx.get_task(report, "q1") is None  # the once-off run ran, then was removed
        assert runs == [("q1", 0, 1), ("q1", 3600, 1)]

    async def test_run_now_while_running_queues_nothing(self, apps: AppFactory) -> None:
        app = apps.app()
        starts: list[float] = []

        @app.task(interval=timedelta(minutes=1), lease_duration=timedelta(minutes=5))
        async def long(context: Context) -> None:
            starts.append((apps.clock.now() - START).total_seconds())
            await pyncette.sleep(30 if len(starts) == 1 else 1)

        async with apps.run(app) as ctx:
            await apps.clock.advance(timedelta(seconds=70))
            assert await ctx.run_task_now(long) == "running"  # the run that started at 60 s holds it
            await apps.clock.advance(timedelta(seconds=21))
            assert await ctx.run_task_now(long) == "queued"
            await apps.clock.advance(timedelta(seconds=10))
        assert starts == [60, 91]

    async def test_describe_next_runs_across_daylight_saving_time(self, apps: AppFactory) -> None:
        app = apps.app()

        @app.task(schedule="0 12 * * *", timezone="Europe/Berlin")
        async def noon(context: Context) -> None:
            pass

        await apps.clock.advance_to(datetime(2030, 3, 29, tzinfo=timezone.utc))
        async with apps.run(app) as ctx:
            described = await ctx.describe_task(noon, next_runs=4)
        assert described is not None
        # Clocks go forward on 2030-03-31: noon in Berlin moves from 11:00 to 10:00 UTC.
        assert [t.isoformat() for t in described.next_runs] == [
            f"2030-0{m}-{d}T12:00:00+0{o}:00" for m, d, o in [(3, 29, 1), (3, 30, 1), (3, 31, 2), (4, "01", 2)]
        ]

    async def test_exhausted_retries_can_pause_the_task(self, apps: AppFactory) -> None:
        app = apps.app()
        tries: list[tuple[str, float]] = []

        @app.dynamic_task(interval=timedelta(minutes=1), retry=pyncette.Retry(attempts=2, on_exhausted="pause"))
        async def fragile(context: Context) -> None:
            tries.append((context.task.name, (apps.clock.now() - START).total_seconds()))
            if context.task.name == "bad":
                raise RuntimeError("remote refused")

        async with apps.run(app) as ctx:
            await ctx.schedule_tasks(fragile, {"bad": {}, "good": {}})
            await apps.clock.advance(timedelta(minutes=5, seconds=30))
            assert [at for name, at in tries if name == "bad"] == [60, 61]  # then paused
            assert len([name for name, _ in tries if name == "good"]) == 5
            described = await ctx.describe_task(fragile, "bad")
            assert described is not None and described.paused is not None
            assert described.paused.scope == "instance" and described.paused.by == "pyncette"
            assert described.paused.note == "retries exhausted: RuntimeError: remote refused"
            assert offsets([described.state.scheduled_at.astimezone(START.tzinfo)]) == [120]
            await ctx.resume_task(fragile, "bad")
            await apps.clock.advance(timedelta(seconds=11))
        assert [at for name, at in tries if name == "bad"][2] == 330  # one run makes up for the missed ones

    async def test_history_keeps_the_last_runs(self, apps: AppFactory) -> None:
        app = apps.app()
        tries = 0

        @app.task(interval=timedelta(minutes=1), history=3, history_max_age=timedelta(minutes=10))
        async def audited(context: Context) -> None:
            nonlocal tries
            tries += 1
            await pyncette.sleep(2)
            if tries == 4:
                raise RuntimeError("fourth run fails")

        @app.dynamic_task(interval=timedelta(minutes=1))
        async def plain(context: Context) -> None:
            pass

        async with apps.run(app) as ctx:
            await ctx.schedule_task(plain, "p1")
            await ctx.schedule_task(plain, "p2", history=2)
            await apps.clock.advance(timedelta(minutes=5, seconds=30))
            entries = await ctx.task_history(audited)
            # The run due at 240 s failed; its lease ran out at 300 s and it was tried again (1.x's failure_mode
            # NONE), then came the run due at 300 s.
            assert [offsets([e.scheduled_at])[0] for e in entries] == [300, 240, 240]
            assert [offsets([e.started_at])[0] for e in entries] == [302, 300, 240]
            assert [e.outcome for e in entries] == ["succeeded", "succeeded", "failed"]
            assert entries[2].error == "RuntimeError: fourth run fails" and entries[0].error is None
            assert all(e.attempt == 1 and e.process and e.finished_at - e.started_at == 2 * S for e in entries)
            assert await ctx.task_history(plain, "p1") == []
            assert [e.outcome for e in await ctx.task_history(plain, "p2")] == ["succeeded", "succeeded"]
            # A ring: the storage holds three entries, whatever the number of runs.
            page, _ = await ctx.repository.list_page("audited/static/history", limit=100, continuation=None)
            assert len(page) == 3
            audited.enabled = False
            await apps.clock.advance(timedelta(minutes=9))
            # history_max_age drops what is older than ten minutes: the run that finished at 242 s.
            assert [offsets([e.started_at])[0] for e in await ctx.task_history(audited)] == [302, 300]

    async def test_prune_lists_then_deletes_what_the_code_no_longer_has(self, apps: AppFactory) -> None:
        old = apps.app()

        @old.task(interval=timedelta(hours=1))
        async def retired(context: Context) -> None:
            pass

        @old.dynamic_task(interval=timedelta(hours=1))
        async def gone(context: Context) -> None:
            pass

        @old.task(interval=timedelta(hours=1))
        async def kept(context: Context) -> None:
            pass

        async with apps.run(old) as ctx:
            await ctx.schedule_tasks(gone, {f"g{n}": {} for n in range(3)})
        new = apps.app()

        @new.task(interval=timedelta(hours=1), name="kept")
        async def kept_again(context: Context) -> None:
            pass

        async with new.create(clock=apps.clock) as ctx:
            dry = sorted((o.parent, o.records, o.deleted) for o in await ctx.prune())
            assert dry == [("gone", 3, False), ("retired/static", 1, False)]
            assert sorted((o.parent, o.records, o.deleted) for o in await ctx.prune(dry_run=False)) == [
                ("gone", 3, True),
                ("retired/static", 1, True),
            ]
            assert await ctx.prune() == []
            assert await ctx.get_task(kept_again) is not None


__all__ = ["ODD", "ControlContract", "ControlSuite"]
