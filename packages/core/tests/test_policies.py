"""Execution policies: validation of the options, the catch-up arithmetic, the stored run state.

The behaviour of the policies in running apps is in the conformance suite (PolicySuite), run on every
backend.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pyncette import ExecutionMode, FailureMode, Pyncette, Retry
from pyncette.errors import ConfigurationError
from pyncette.events import Failed
from pyncette.policies import Policies
from pyncette.runstate import EMPTY, MAX_ERROR, RunState, decode, summary
from pyncette.runtime import lateness
from pyncette.schedule import CronSchedule, IntervalSchedule, OnceSchedule, parse_timezone

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
S = timedelta(seconds=1)
M = timedelta(minutes=1)


async def body(context: object) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": 3}, "invalid retry 3: use pyncette.Retry"),
        ({"timeout": 5}, "invalid timeout 5: must be a positive timedelta"),
        ({"timeout": timedelta(0)}, "invalid timeout datetime.timedelta(0): must be a positive timedelta"),
        ({"catchup_window": -S}, "invalid catchup_window"),
        ({"coalesce": "newest"}, "invalid coalesce 'newest': must be one of all, latest, earliest"),
        ({"overlap": "forbid"}, "invalid overlap 'forbid': must be one of allow, skip, wait"),
        ({"jitter": "5s"}, "invalid jitter '5s': must be a timedelta >= 0"),
        (
            {"retry": Retry(), "execution_mode": ExecutionMode.AT_MOST_ONCE},
            "retry= is not allowed with AT_MOST_ONCE",
        ),
        ({"retry": Retry(), "failure_mode": FailureMode.UNLOCK}, "retry= replaces failure_mode="),
        ({"fast_forward": True, "coalesce": "latest"}, "fast_forward=True means coalesce='earliest'"),
    ],
)
def test_bad_policy_options_fail_early(options: dict[str, object], message: str) -> None:
    app = Pyncette()
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        app.task(interval=M, **options)(body)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "invalid Retry attempts 0: must be an integer from 1 to 10000"),
        ({"attempts": True}, "invalid Retry attempts True"),
        ({"backoff": 1}, "invalid Retry backoff 1"),
        ({"backoff": M, "max_backoff": S}, "invalid Retry max_backoff"),
        ({"jitter": 2}, "invalid Retry jitter 2: must be a number from 0 to 1"),
        ({"retry_on": (ValueError, "x")}, "invalid Retry retry_on"),
        ({"on_exhausted": "stop"}, "invalid Retry on_exhausted 'stop': must be one of skip, delete, pause"),
    ],
)
def test_bad_retry_fails_early(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_retry_delay_grows_caps_and_jitters_deterministically() -> None:
    retry = Retry(attempts=10, backoff=S, max_backoff=10 * S)
    assert [retry.delay(n, "x").total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    jittered = Retry(attempts=10, backoff=10 * S, max_backoff=M, jitter=0.5)
    first = jittered.delay(1, "run-a")
    assert first == jittered.delay(1, "run-a")  # the same in every process
    assert 10 * S <= first < 15 * S
    assert len({jittered.delay(1, f"run-{i}") for i in range(20)}) > 1


def test_retry_on_cannot_differ_per_instance() -> None:
    app = Pyncette()

    @app.dynamic_task(retry=Retry(retry_on=(KeyError,)))
    async def job(context: object) -> None:
        pass

    with pytest.raises(ConfigurationError, match="retry_on cannot be set per instance"):
        job.instantiate("a", interval=M, retry=Retry(retry_on=(ValueError,)))
    instance = job.instantiate("b", interval=M, retry=Retry(attempts=7))
    assert instance.policies.retry is not None and instance.policies.retry.attempts == 7


def test_instance_spec_round_trip_keeps_policies() -> None:
    app = Pyncette()

    @app.dynamic_task(retry=Retry(attempts=4, retry_on=(KeyError,)), overlap="wait")
    async def job(context: object) -> None:
        pass

    instance = job.instantiate(
        "a", schedule="0 * * * *", timeout=7 * S, catchup_window=M, coalesce="latest", jitter=3 * S
    )
    again = job.from_spec("a", instance.to_spec())
    assert again.policies == instance.policies
    assert again.policies.retry is not None and again.policies.retry.retry_on == (KeyError,)
    plain = job.instantiate("b", interval=M)
    assert '"p"' in plain.to_spec()  # inherits the template's retry and overlap
    bare = Pyncette().dynamic_task()(body).instantiate("c", interval=M)
    assert '"p"' not in bare.to_spec()  # nothing stored when no policy is set (1.x-shaped spec)


def test_fast_forward_is_coalesce_earliest() -> None:
    app = Pyncette()
    task = app.task(interval=M, fast_forward=True)(body)
    assert task.policies.coalesce == "earliest" and task.fast_forward


def test_event_listener_validation() -> None:
    app = Pyncette()
    with pytest.raises(ConfigurationError, match="invalid event type 'failed'"):
        app.on("failed", print)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="invalid event listener 3"):
        app.on(Failed, 3)  # type: ignore[call-overload]


# -- catch-up arithmetic ----------------------------------------------------------------------------


def test_plan_defaults_run_every_missed_run() -> None:
    plan = lateness.plan(IntervalSchedule(M), Policies(), T0, T0 + 10 * M)
    assert plan == lateness.Plan(T0, None)


def test_plan_window_on_interval_grid() -> None:
    policies = Policies.build(catchup_window=3 * M)
    plan = lateness.plan(IntervalSchedule(M), policies, T0, T0 + 10 * M + 30 * S)
    # Runs at T0+0..10 min; the window starts at 7:30, so 8, 9 and 10 run and 0..7 (8 runs) are missed.
    assert plan == lateness.Plan(T0 + 8 * M, None, 8, T0)


def test_plan_window_with_nothing_left_reschedules() -> None:
    policies = Policies.build(catchup_window=S)
    plan = lateness.plan(IntervalSchedule(M), policies, T0, T0 + 10 * M + 30 * S)
    assert plan == lateness.Plan(None, T0 + 11 * M, 11, T0)
    once = lateness.plan(OnceSchedule(T0), policies, T0, T0 + M)
    assert once == lateness.Plan(None, None, 1, T0)  # a once-off run past the window is dropped


def test_plan_latest_on_cron_after_long_downtime() -> None:
    schedule = CronSchedule("* * * * * *")  # every second
    now = T0 + timedelta(days=3, seconds=0.5)
    plan = lateness.plan(schedule, Policies.build(coalesce="latest"), T0, now)
    assert plan.run_at == T0 + timedelta(days=3)
    assert plan.missed == 10_000  # counting stops there


def test_latest_until_across_dst_in_zone() -> None:
    tz = parse_timezone("Europe/Ljubljana")
    schedule = CronSchedule("30 2 * * *", tz)  # 02:30 does not exist on 2030-03-31
    start = schedule.first(datetime(2030, 3, 28, tzinfo=timezone.utc))
    latest = lateness.latest_until(schedule, start, datetime(2030, 4, 2, 12, tzinfo=timezone.utc))
    assert latest.astimezone(tz).strftime("%m-%d %H:%M") == "04-02 02:30"


def test_count_interval_and_cron_agree() -> None:
    assert lateness.count(IntervalSchedule(M), T0, T0 + 5 * M) == 5
    assert lateness.count(CronSchedule("* * * * *"), T0, T0 + 5 * M) == 5


# -- stored run state --------------------------------------------------------------------------------


def test_run_state_round_trip_and_damage() -> None:
    state = RunState(2, T0, T0 + S, T0 + 2 * S, "failed", 'KeyError: "é"')
    assert decode(state.encode()) == state
    assert decode(None) == EMPTY and decode("") == EMPTY and decode("not json") == EMPTY and decode("[1]") == EMPTY
    damaged = decode('{"a":-3,"n":"yesterday","lo":"exploded","le":5,"ls":"2030-01-01T00:00:00"}')
    assert damaged == EMPTY  # every damaged value reads as absent (a naive time included)
    assert decode('{"a":1,"future_key":true}').attempt == 2


def test_error_summary_is_bounded_and_redacted() -> None:
    text = summary(RuntimeError("connect to redis://user:hunter2@host failed " + "x" * 1000))
    assert "hunter2" not in text and len(text) == MAX_ERROR and text.startswith("RuntimeError: connect")


# -- cost ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retry_and_timeout_cost_no_extra_storage_call_on_success() -> None:
    from collections import Counter

    from pyncette.abc import Repository
    from pyncette.testing import VirtualClock, running

    async def calls_for(**policies: object) -> Counter[str]:
        calls: Counter[str] = Counter()

        def count(repository: Repository) -> Repository:
            for name in ("register", "claim", "commit", "unlock", "extend", "delete", "get", "list_page"):
                original = getattr(repository, name)

                async def counted(
                    *args: object, _original: object = original, _name: str = name, **kw: object
                ) -> object:
                    calls[_name] += 1
                    return await _original(*args, **kw)  # type: ignore[operator]

                setattr(repository, name, counted)
            return repository

        app = Pyncette(backend="memory")
        app.use_repository_wrapper(count)

        @app.task(interval=10 * S, **policies)
        async def job(context: object) -> None:
            pass

        clock = VirtualClock(T0)
        async with app.create(clock=clock) as ctx, running(ctx):
            await clock.advance(35 * S)
        return calls

    plain = await calls_for()
    with_policies = await calls_for(retry=Retry(attempts=3), timeout=5 * S)
    assert plain["commit"] == 3
    assert with_policies == plain


@pytest.mark.anyio
async def test_lease_lost_event() -> None:
    from pyncette import Context
    from pyncette.events import LeaseLost
    from pyncette.testing import VirtualClock, running

    app = Pyncette(backend="memory")
    lost: list[LeaseLost] = []
    app.on(LeaseLost, lost.append)

    @app.dynamic_task()
    async def job(context: Context) -> None:
        await context.app_context.unschedule_task(context.task)  # someone removes it while it runs
        await context.heartbeat()

    clock = VirtualClock(T0)
    async with app.create(clock=clock) as ctx, running(ctx):
        await ctx.schedule_task(job, "gone", execute_at=T0 + S)
        await clock.advance(2 * S)
    assert [(e.task.name, e.scheduled_at) for e in lost] == [("gone", T0 + S)]


def test_jitter_offset_is_a_pure_function_of_the_run() -> None:
    """The same run gets the same offset in every process (no process-local randomness or hash seed)."""
    import subprocess
    import sys

    policies = Policies.build(jitter=timedelta(minutes=5))
    here = policies.offset("job", "i1", T0)
    code = (
        "from datetime import datetime, timedelta, timezone\n"
        "from pyncette.policies import Policies\n"
        "p = Policies.build(jitter=timedelta(minutes=5))\n"
        "print(p.offset('job', 'i1', datetime(2030, 1, 1, tzinfo=timezone.utc)).total_seconds())\n"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert float(other.stdout) == here.total_seconds()
    assert timedelta(0) <= here < timedelta(minutes=5)
    assert policies.offset("job", "i2", T0) != here and policies.offset("job", "i1", T0 + M) != here
    assert Policies().offset("job", "i1", T0) == timedelta(0)


@pytest.mark.anyio
async def test_at_most_once_stores_the_start_only() -> None:
    """Its record is committed before the body runs, so no outcome is claimed for it (it may still fail)."""
    from pyncette import Context
    from pyncette.testing import VirtualClock, running

    app = Pyncette(backend="memory")

    @app.task(interval=10 * S, execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def fragile(context: Context) -> None:
        raise RuntimeError("fails after the commit")

    clock = VirtualClock(T0)
    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(11 * S)
        state = await ctx.get_task(fragile)
    assert state is not None
    assert (state.last_started, state.last_finished, state.last_outcome, state.last_error) == (
        T0 + 10 * S,
        None,
        None,
        None,
    )


@pytest.mark.anyio
async def test_timed_out_event_time_is_utc() -> None:
    from pyncette import Context, sleep
    from pyncette.events import TimedOut
    from pyncette.testing import VirtualClock, running

    app = Pyncette(backend="memory")
    seen: list[TimedOut] = []
    app.on(TimedOut, seen.append)

    @app.task(schedule="* * * * *", timezone="Asia/Tokyo", timeout=5 * S, failure_mode=FailureMode.COMMIT)
    async def slow(context: Context) -> None:
        await sleep(30)

    clock = VirtualClock(T0)
    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(70 * S)
    assert [e.scheduled_at for e in seen] == [T0 + M]
    assert seen[0].scheduled_at.utcoffset() == timedelta(0)
