"""Every bad input fails early, with a ConfigurationError (a ValueError) naming the bad value."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pyncette import Context, ExecutionMode, FailureMode, Pyncette, PyncetteContext
from pyncette.errors import ConfigurationError
from pyncette.task import Task
from pyncette.testing import VirtualClock, running

EVERY_MINUTE = "* * * * *"
SECOND = timedelta(seconds=1)


async def job(context: Context) -> None:
    return None


def declare(**options: Any) -> Task:
    return Pyncette().task(**options)(job)


def raises_naming(value: object) -> Any:
    """``pytest.raises`` for a ConfigurationError whose message contains ``value`` (its repr for non-strings)."""
    text = value if isinstance(value, str) else repr(value)
    return pytest.raises(ConfigurationError, match=re.escape(text))


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


# -- task options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["61 * * * *", "* * *", "every minute", "0 0 30 2 *"])
def test_invalid_cron_expression(expression: str) -> None:
    with raises_naming(repr(expression)):
        declare(schedule=expression)


def test_schedule_interval_execute_at_exactly_one() -> None:
    with raises_naming("got none"):
        declare()
    with raises_naming("got schedule, interval"):
        declare(schedule=EVERY_MINUTE, interval=SECOND)
    with raises_naming("got interval, execute_at"):
        Pyncette().dynamic_task()(job).instantiate(
            "x", interval=SECOND, execute_at=datetime(2030, 1, 1, tzinfo=timezone.utc)
        )


@pytest.mark.parametrize("interval", [timedelta(0), timedelta(seconds=-5)])
def test_non_positive_interval(interval: timedelta) -> None:
    with raises_naming(interval):
        declare(interval=interval)


@pytest.mark.parametrize("lease", [timedelta(0), timedelta(seconds=-1), 60])
def test_non_positive_lease_duration(lease: Any) -> None:
    with raises_naming(f"invalid lease_duration {lease!r}"):
        declare(interval=SECOND, lease_duration=lease)


def test_unknown_timezone() -> None:
    with raises_naming("'Mars/Olympus'"):
        declare(schedule=EVERY_MINUTE, timezone="Mars/Olympus")
    with raises_naming("'Mars/Olympus'"):
        Pyncette().dynamic_task(timezone="Mars/Olympus")(job)


def test_timezone_without_cron() -> None:
    with raises_naming("timezone='Europe/Dublin'"):
        declare(interval=SECOND, timezone="Europe/Dublin")


def test_extra_arguments_must_be_json_serializable() -> None:
    with raises_naming("'job' must be JSON-serializable"):
        declare(interval=SECOND, connection=object())
    with raises_naming("bytes"):
        declare(interval=SECOND, payload=b"raw")
    # JSON-friendly values are fine and reach the context unchanged
    task = declare(interval=SECOND, who="alice", n=3, tags=["a"], nested={"k": None})
    assert task.extra_args == {"who": "alice", "n": 3, "tags": ["a"], "nested": {"k": None}}


def test_execution_and_failure_modes() -> None:
    with raises_naming("failure_mode=UNLOCK"):
        declare(interval=SECOND, execution_mode=ExecutionMode.AT_MOST_ONCE, failure_mode=FailureMode.UNLOCK)
    with raises_naming("failure_mode=COMMIT"):
        declare(interval=SECOND, execution_mode=ExecutionMode.AT_MOST_ONCE, failure_mode=FailureMode.COMMIT)
    with raises_naming("'at_most_once'"):
        declare(interval=SECOND, execution_mode="at_most_once")
    with raises_naming("'unlock'"):
        declare(interval=SECOND, failure_mode="unlock")
    task = declare(interval=SECOND, execution_mode=ExecutionMode.AT_MOST_ONCE)
    assert task.failure_mode is FailureMode.NONE


def test_execute_at_only_on_dynamic_instances() -> None:
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)
    with raises_naming("execute_at="):
        declare(execute_at=at)
    with raises_naming("execute_at="):
        Pyncette().dynamic_task(execute_at=at)(job)
    template = Pyncette().dynamic_task()(job)
    instance = template.instantiate("once", execute_at=at)
    assert instance.schedule is not None
    assert instance.schedule.first(at + timedelta(days=1)) == at


@pytest.mark.parametrize("name", ["a/b", "", "x" * 101, "tab\there"])
def test_bad_task_names(name: str) -> None:
    with raises_naming(f"invalid task name {name!r}"):
        declare(name=name, interval=SECOND)


def test_longest_task_name_is_accepted() -> None:
    assert declare(name="x" * 100, interval=SECOND).name == "x" * 100


def test_duplicate_task_names() -> None:
    app = Pyncette()
    app.task(name="same", interval=SECOND)(job)
    with raises_naming("duplicate task name 'same'"):
        app.task(name="same", schedule=EVERY_MINUTE)(job)
    with raises_naming("duplicate task name 'same'"):
        app.dynamic_task(name="same")(job)
    app.task(interval=SECOND)(job)
    with raises_naming("duplicate task name 'job'"):
        app.task(interval=SECOND)(job)


def test_a_coroutine_may_carry_several_task_decorators_with_names() -> None:
    app = Pyncette()

    @app.task(name="fast", interval=SECOND)
    @app.task(name="slow", interval=timedelta(hours=1), size="big")
    async def work(context: Context) -> None:
        return None

    assert [t.name for t in app.tasks] == ["slow", "fast"]
    slow, fast = app.tasks
    assert fast.func is slow.func
    assert fast.interval == SECOND
    assert slow.extra_args == {"size": "big"}
    assert fast.extra_args == {}


def test_stacking_without_names_is_refused() -> None:
    app = Pyncette()
    with raises_naming("duplicate task name 'work'"):

        @app.task(interval=SECOND)
        @app.task(interval=timedelta(hours=1))
        async def work(context: Context) -> None:
            return None


def test_task_must_be_callable() -> None:
    with raises_naming("must be an async function"):
        Pyncette().task(interval=SECOND)("not a function")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("count", "enabled"),
    [(0, None), (-1, None), (4, [4]), (4, [-1]), (4, ["0"])],
)
def test_bad_partitions(count: int, enabled: list[Any] | None) -> None:
    with raises_naming("invalid"):
        Pyncette().partitioned_task(partition_count=count, enabled_partitions=enabled)(job)


# -- dynamic templates: their schedule options are checked when declared -------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"schedule": "not a cron"},
        {"schedule": EVERY_MINUTE, "interval": SECOND},
        {"interval": timedelta(0)},
    ],
    ids=["bad-cron", "cron-and-interval", "zero-interval"],
)
def test_dynamic_template_schedule_options_fail_early(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Pyncette().dynamic_task(**options)(job)


def test_dynamic_template_timezone_is_not_silently_ignored() -> None:
    try:
        template = Pyncette().dynamic_task(timezone="Asia/Tokyo")(job)
    except ConfigurationError:
        return  # refusing it is fine too
    instance = template.instantiate("x", schedule="0 9 * * *")
    assert str(instance.tz) == "Asia/Tokyo"


# -- fixtures and context values ----------------------------------------------------------------------------


async def fixture_func(app_context: PyncetteContext) -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize("name", ["task", "app_context", "scheduled_at", "args", "heartbeat", "_private"])
def test_reserved_fixture_names(name: str) -> None:
    app = Pyncette()
    with raises_naming(f"context name {name!r} is reserved"):
        app.fixture(name=name)(fixture_func)
    with raises_naming(f"context name {name!r} is reserved"):
        app.use_fixture(name, fixture_func)
    assert app.fixtures == {}


def test_fixture_named_after_the_function_is_checked_too() -> None:
    async def task(app_context: PyncetteContext) -> AsyncIterator[int]:
        yield 1

    with raises_naming("'task' is reserved"):
        Pyncette().fixture()(task)


def test_duplicate_fixture_names() -> None:
    app = Pyncette()
    app.fixture(name="db")(fixture_func)
    with raises_naming("duplicate fixture name 'db'"):
        app.use_fixture("db", fixture_func)


@pytest.mark.anyio
async def test_reserved_and_duplicate_context_values() -> None:
    app = Pyncette()
    app.fixture(name="db")(fixture_func)
    async with app.create(clock=VirtualClock()) as ctx:
        for name in ("app_context", "task", "_x"):
            with raises_naming(f"context name {name!r} is reserved"):
                ctx.add_to_context(name, 1)
        with raises_naming("'db' is already in use"):
            ctx.add_to_context("db", 2)
        ctx.add_to_context("extra", 3)
        with raises_naming("'extra' is already in use"):
            ctx.add_to_context("extra", 4)


# -- app options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "invalid batch_size 0"),
        ({"batch_size": True}, "invalid batch_size True"),
        ({"batch_size": 1.5}, "invalid batch_size 1.5"),
        ({"concurrency_limit": 0}, "invalid concurrency_limit 0"),
        ({"concurrency_limit": -3}, "invalid concurrency_limit -3"),
        ({"poll_interval": timedelta(0)}, "invalid poll_interval datetime.timedelta(0)"),
        ({"poll_interval": timedelta(seconds=-1)}, "invalid poll_interval"),
        ({"poll_interval": 1}, "invalid poll_interval 1"),
    ],
)
def test_bad_app_options(kwargs: dict[str, Any], message: str) -> None:
    with raises_naming(message):
        Pyncette(**kwargs)


def test_smallest_app_options_are_accepted() -> None:
    app = Pyncette(batch_size=1, concurrency_limit=1, poll_interval=timedelta(milliseconds=1))
    assert (app.batch_size, app.concurrency_limit) == (1, 1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"sqlite_bogus": 1}, "sqlite_bogus"),
        ({"sqlite_databse": "typo.db"}, "sqlite_databse"),
        ({"sqlite_table_name": "bad name; DROP TABLE x"}, "sqlite_table_name 'bad name; DROP TABLE x'"),
        ({"sqlite_table_name": "1starts_with_digit"}, "sqlite_table_name '1starts_with_digit'"),
        ({"sqlite_table_name": "x" * 64}, "sqlite_table_name"),
        ({"sqlite_timeout": 0}, "sqlite_timeout 0"),
        ({"sqlite_database": ""}, "sqlite_database ''"),
    ],
)
async def test_bad_backend_options_fail_at_create(options: dict[str, Any], named: str) -> None:
    app = Pyncette(**options)
    with raises_naming(named):
        async with app.create(clock=VirtualClock()):
            pass


# -- dynamic instances --------------------------------------------------------------------------------------


@pytest.fixture
def dynamic_app() -> tuple[Pyncette, Task, Task]:
    app = Pyncette()
    template = app.dynamic_task()(job)
    static = app.task(name="static", interval=SECOND)(job)
    return app, template, static


Call = Callable[[PyncetteContext, Task, Task], Any]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda ctx, t, s: ctx.schedule_task(t, "", interval=SECOND), "invalid instance name ''"),
        (lambda ctx, t, s: ctx.schedule_task(t, "x" * 201, interval=SECOND), "invalid instance name 'xxxx"),
        (lambda ctx, t, s: ctx.schedule_task(t, "nul\x00", interval=SECOND), "invalid instance name"),
        (lambda ctx, t, s: ctx.schedule_task(s, "i", interval=SECOND), "'static'> is not a dynamic task"),
        (lambda ctx, t, s: ctx.schedule_task(t, "i"), "got none"),
        (lambda ctx, t, s: ctx.schedule_task(t, "i", interval=timedelta(0)), "timedelta(0)"),
        (lambda ctx, t, s: ctx.schedule_task(t, "i", schedule="bad cron"), "'bad cron'"),
        (lambda ctx, t, s: ctx.schedule_task(t, "i", interval=SECOND, blob=b"x"), "JSON-serializable"),
        (lambda ctx, t, s: ctx.schedule_task(t, "i", interval=SECOND, timezone="UTC"), "timezone='UTC'"),
        (lambda ctx, t, s: ctx.get_task(t), "pass the instance name"),
        (lambda ctx, t, s: ctx.get_task(s, "i"), "no instance 'i'"),
        (lambda ctx, t, s: ctx.list_tasks(t, limit=0), "invalid limit 0"),
        (lambda ctx, t, s: ctx.list_tasks(t, continuation_token="garbage"), "'garbage'"),
        (lambda ctx, t, s: ctx.list_tasks(t, continuation_token="[7, null]"), "'[7, null]'"),
        (lambda ctx, t, s: ctx.list_records(t, 0), "invalid limit 0"),
        (lambda ctx, t, s: ctx.list_records(s, 10), "'static'> is not a dynamic task"),
    ],
)
async def test_bad_dynamic_calls(dynamic_app: tuple[Pyncette, Task, Task], call: Call, named: str) -> None:
    app, template, static = dynamic_app
    async with app.create(clock=VirtualClock()) as ctx:
        with raises_naming(named):
            await call(ctx, template, static)
        # nothing was written
        assert (await ctx.list_tasks(template)).tasks == []


@pytest.mark.anyio
async def test_longest_instance_name_is_accepted(dynamic_app: tuple[Pyncette, Task, Task]) -> None:
    app, template, _ = dynamic_app
    async with app.create(clock=VirtualClock()) as ctx:
        instance = await ctx.schedule_task(template, "x" * 200, interval=SECOND)
        assert instance.name == "x" * 200
        assert await ctx.get_task(template, "x" * 200) is not None


@pytest.mark.anyio
async def test_scheduling_an_instance_of_a_static_task_is_refused() -> None:
    app = Pyncette()
    static = app.task(interval=SECOND)(job)
    async with app.create() as ctx:
        with raises_naming("is not a dynamic task"):
            await ctx.schedule_task(static, "x", interval=SECOND)


@pytest.mark.anyio
async def test_unschedule_a_static_task_is_refused() -> None:
    app = Pyncette()
    seen: list[datetime] = []

    @app.task(interval=timedelta(seconds=10))
    async def static(context: Context) -> None:
        seen.append(context.scheduled_at)

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(15 * SECOND)
        refused = False
        try:
            await ctx.unschedule_task(static)
        except ConfigurationError:
            refused = True
        await clock.advance(60 * SECOND)
    assert refused
    assert len(seen) == 7
