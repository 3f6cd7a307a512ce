"""Prometheus compatibility with Pyncette 1.1.0: one app script, run under 1.1.0 and under this version
(with each set of measure_* switches), must export every 1.x metric family with the same samples and label
names (the 2.x families come on top), and count in the same sets."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pyncette import Context, FailureMode, Pyncette
from pyncette.errors import ConfigurationError
from pyncette.prometheus import LEGACY_OPERATIONS, use_prometheus
from pyncette.testing import VirtualClock, running

# Written against the 1.x API only. It runs a static task, a dynamic instance that succeeds and one that
# fails (waiting on events, not on time), stops the loop, makes one storage call fail by dropping the
# tables under the open repository, and prints the default registry.
APP_SCRIPT = """
import asyncio
import datetime
import sqlite3

from prometheus_client import generate_latest

from pyncette import Context, Pyncette
from pyncette.prometheus import use_prometheus
from pyncette.sqlite import sqlite_repository

app = Pyncette(
    repository_factory=sqlite_repository,
    sqlite_database="metrics.db",
    poll_interval=datetime.timedelta(seconds=0.05),
)
use_prometheus(app, **SWITCHES)
ran = {"ok": asyncio.Event(), "bad": asyncio.Event()}


@app.task(interval=datetime.timedelta(seconds=1))
async def steady(context: Context) -> None:
    pass


@app.dynamic_task()
async def orders(context: Context) -> None:
    try:
        if context.args["fail"]:
            raise ValueError("this instance always fails")
    finally:
        ran[context.task.name].set()


async def main() -> None:
    async with app.create() as ctx:
        now = datetime.datetime.now(datetime.timezone.utc)
        await ctx.schedule_task(orders, "ok", execute_at=now, fail=False)
        await ctx.schedule_task(orders, "bad", execute_at=now, fail=True)
        loop = asyncio.create_task(ctx.run())
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ran.values())), 60)
        ctx.shutdown()
        await asyncio.wait_for(loop, 60)
        await ctx.get_task(orders, "ok")
        with sqlite3.connect("metrics.db") as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                db.execute(f'DROP TABLE "{table}"')
        try:
            await ctx.get_task(orders, "ok")
        except Exception:
            pass
        else:
            raise AssertionError("get_task on dropped tables did not fail")
    print(generate_latest().decode())


asyncio.run(main())
"""

# Families 1.x defines whose samples only appear after an event the script cannot cause in 2.x: a tick
# that raises (2.x retries failing storage calls inside the tick and counts them under repository_ops).
NEVER_SAMPLED_IN_2X = {"pyncette_ticks_failures"}

Shape = dict[str, tuple[str, frozenset[tuple[str, tuple[str, ...]]]]]


def shape(text: str) -> Shape:
    """``{family: (type, {(sample name, sorted label names)})}`` of the ``pyncette_`` families."""
    found: Shape = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("pyncette_"):
            samples = frozenset((s.name, tuple(sorted(s.labels))) for s in family.samples)
            found[family.name] = (family.type, samples)
    return found


def total(text: str, operation_set: str) -> float:
    """The sum of ``pyncette_<set>_total`` over all its label values."""
    wanted = f"pyncette_{operation_set}_total"
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == wanted)


def legacy_metrics(script: str) -> str:
    from pyncette_conformance.legacy import legacy_python, run_legacy

    python = str(legacy_python())
    check = subprocess.run([python, "-c", "import prometheus_client"], capture_output=True, check=False)
    if check.returncode != 0:  # the 1.1.0 environment is created without its prometheus extra
        subprocess.run([python, "-m", "pip", "install", "-q", "pyncette[prometheus]==1.1.0"], check=True)
    done = run_legacy(script, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def current_metrics(script: str, workdir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=workdir, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "switches",
    [{}, {"measure_repository": False, "measure_ticks": False}, {"measure_tasks": False}],
    ids=["all", "tasks-only", "no-tasks"],
)
def test_1x_families_and_labels_are_exported(tmp_path: Path, switches: dict[str, bool]) -> None:
    script = APP_SCRIPT.replace("**SWITCHES", ", ".join(f"{k}={v}" for k, v in switches.items()))
    legacy_text, current_text = legacy_metrics(script), current_metrics(script, tmp_path)
    legacy, current = shape(legacy_text), shape(current_text)

    sets = {"tasks": "measure_tasks", "repository_ops": "measure_repository", "ticks": "measure_ticks"}
    measured = {name for name, switch in sets.items() if switches.get(switch, True)}
    expected = {
        f"pyncette_{name}{suffix}" for name in sets for suffix in ("", "_duration_seconds", "_failures", "_in_progress")
    } | {"pyncette_tasks_staleness_seconds"}
    assert expected <= legacy.keys()  # 1.x registers every family, measured or not
    for name, (kind, samples) in legacy.items():
        assert name in current, f"1.x family {name} is missing"
        assert current[name][0] == kind, name
        if name in NEVER_SAMPLED_IN_2X:
            assert not samples  # so nothing is lost by not comparing it
            continue
        if not switches:  # everything measured: every family has samples, so label names are compared
            assert samples, f"the script left the 1.x family {name} without samples"
        assert current[name][1] == samples, name
    for name in sets:
        # Under both versions, the switches decide which sets count anything.
        assert (total(legacy_text, name) > 0) == (name in measured), name
        assert (total(current_text, name) > 0) == (name in measured), name
    # The 2.x families are still there.
    assert {"pyncette_task_runs", "pyncette_repository_call_duration_seconds"} <= current.keys()


@pytest.mark.anyio
async def test_1x_label_values() -> None:
    registry = CollectorRegistry()
    app = Pyncette(poll_interval=timedelta(seconds=1))
    use_prometheus(app, registry=registry)

    @app.task(interval=timedelta(seconds=1))
    async def steady(context: Context) -> None:
        pass

    @app.task(interval=timedelta(seconds=2), failure_mode=FailureMode.UNLOCK)
    async def broken(context: Context) -> None:
        raise KeyError("always fails")

    @app.partitioned_task(partition_count=2)
    async def orders(context: Context) -> None:
        await context.heartbeat()

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        await ctx.schedule_task(orders, "a", interval=timedelta(seconds=1))
        await clock.advance(4)
        await ctx.get_task(orders, "a")
        await ctx.list_tasks(orders)
        await ctx.unschedule_task(orders, "a")

    assert sample("pyncette_tasks_total", task_name="steady") == 4
    assert sample("pyncette_tasks_total", task_name="orders") == 4
    broken_runs = sample("pyncette_tasks_total", task_name="broken")
    assert broken_runs >= 1
    assert sample("pyncette_tasks_failures_total", task_name="broken", exception_type="KeyError") == broken_runs
    assert sample("pyncette_tasks_failures_total", task_name="steady", exception_type="KeyError") == 0
    assert sample("pyncette_tasks_in_progress", task_name="steady") == 0
    assert sample("pyncette_tasks_duration_seconds_count", task_name="steady") == 4
    assert sample("pyncette_tasks_staleness_seconds_count", task_name="orders") == 4
    assert sample("pyncette_tasks_staleness_seconds_sum", task_name="orders") == 0  # virtual time: on time
    assert sample("pyncette_ticks_total") >= 4
    assert sample("pyncette_ticks_in_progress") == 0
    assert sample("pyncette_ticks_duration_seconds_count") == sample("pyncette_ticks_total")

    def ops(operation: str, task_name: str) -> float:
        return sample("pyncette_repository_ops_total", operation=operation, task_name=task_name)

    # Every storage call is counted under 1.x's operation name and the task it concerns; an instance
    # counts under its template, whichever partition it lives in.
    assert ops("register_task", "steady") == 1  # static tasks register in one call: counted for each
    assert ops("register_task", "broken") == 1
    assert ops("register_task", "orders") == 1
    assert ops("poll_task", "steady") >= 4
    assert ops("poll_dynamic_task", "orders") >= 4
    assert ops("poll_task", "orders") == ops("poll_dynamic_task", "steady") == 0
    assert ops("commit_task", "steady") >= 1
    assert ops("unlock_task", "broken") >= 1
    assert ops("extend_lease", "orders") == 4
    assert ops("get_task_state", "orders") == 1
    assert ops("list_task_states", "orders") >= 1
    assert ops("unregister_task", "orders") == 1
    assert set(LEGACY_OPERATIONS.values()) | {"poll_dynamic_task"} == {
        s.labels["operation"]
        for metric in registry.collect()
        if metric.name == "pyncette_repository_ops"
        for s in metric.samples
    }


def test_measure_switches_turn_families_off() -> None:
    registry = CollectorRegistry()
    app = Pyncette()
    use_prometheus(app, False, False, measure_tasks=False, registry=registry)
    assert app.middlewares == []
    assert app.tick_listeners == []
    assert app.repository_wrappers == []
    assert app.fixtures == {}

    app = Pyncette()
    use_prometheus(app, measure_repository=False, registry=registry)
    assert len(app.middlewares) == 1
    assert len(app.tick_listeners) == 1
    assert app.repository_wrappers == []


def test_switches_must_be_booleans() -> None:
    # A 2.x call with the port given positionally lands on measure_repository: say so.
    with pytest.raises(ConfigurationError, match=r"invalid measure_repository 9090: .*port=") as caught:
        use_prometheus(Pyncette(), 9090, registry=CollectorRegistry())  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ConfigurationError, match="invalid measure_tasks 'no': must be True or False"):
        use_prometheus(Pyncette(), measure_tasks="no", registry=CollectorRegistry())  # type: ignore[arg-type]
