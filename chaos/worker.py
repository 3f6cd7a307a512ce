"""One app process of the chaos matrix: ``python chaos/worker.py SPEC.json`` (started by ``chaos/matrix.py``).

The app has, per execution mode under test, a dynamic template (``job_least`` / ``job_most``) whose
once-off instances the matrix registers, and a static task due every second (``tick_least`` /
``tick_most``). Every run appends two lines to the worker's own run file, each with one ``write(2)``
(so a kill never leaves half a line): ``S`` when the body starts and ``D`` when it is done::

    D job_least w003n001 1733000000.000 1733000061.123456 1.0
    (event, task, instance or '-', scheduled_at as a Unix time, wall-clock time, worker.generation)

The spec (JSON) holds ``backend``, ``options``, ``modes``, ``worker`` (its id), ``runs`` (the run file),
``ready`` (a file written once the app polls), ``lease``, ``batch_size``, ``poll_interval``, ``work`` (the
range of seconds a dynamic body takes), ``skew`` (seconds added to the app's clock), ``faults``
(``{"seed": n, "lose_answer": {operation: probability}}`` or null), ``calm`` (a file whose appearance ends
the fault injection) and ``seconds`` (the longest the process lives). ``CHAOS_TRACE=1`` in the environment
also logs every storage call about a static task to ``<runs>.trace``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from pyncette import Context, ExecutionMode, Pyncette, PyncetteContext
from pyncette.abc import Repository
from pyncette.clock import Clock
from pyncette.task import DynamicTask, TaskBody
from pyncette_conformance.faults import FaultPlan, FaultyRepository

#: Execution mode -> (dynamic template, static task) names.
TASKS = {"at-least-once": ("job_least", "tick_least"), "at-most-once": ("job_most", "tick_most")}
EXECUTION_MODES = {"at-least-once": ExecutionMode.AT_LEAST_ONCE, "at-most-once": ExecutionMode.AT_MOST_ONCE}
#: A run of the static task takes this long.
TICK_WORK = 0.05


class SkewedClock(Clock):
    """Real time plus a fixed offset: the app's whole view of time (the runtime reads time only from its clock)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset


class RunLog:
    """Appends one line per event to the run file, each with a single ``write(2)`` on an ``O_APPEND`` file."""

    def __init__(self, path: str, worker: str) -> None:
        self.path, self.worker = path, worker
        self._fd: int | None = None

    def write(self, event: str, task: str, instance: str, scheduled_at: datetime) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        line = f"{event} {task} {instance} {scheduled_at.timestamp():.3f} {time.time():.6f} {self.worker}\n"
        os.write(self._fd, line.encode())


@dataclass
class ChaosApp:
    """The app of a spec, its dynamic templates by execution mode, and the fault injectors it wraps storage in."""

    app: Pyncette
    templates: dict[str, DynamicTask]
    injectors: list[FaultyRepository] = field(default_factory=list)

    def injected(self) -> dict[str, int]:
        """How many faults were injected, by ``"<operation> <kind>"``."""
        counts: Counter[str] = Counter()
        for injector in self.injectors:
            for (operation, kind), n in injector.injected.items():
                counts[f"{operation} {kind}"] += n
        return dict(counts)


def _bodies(log: RunLog, work: tuple[float, float]) -> tuple[TaskBody, TaskBody]:
    """The body of the dynamic instances (a random while in ``work``) and of the static task (a moment)."""
    pick = random.Random()

    async def job(context: Context) -> None:
        template = context.task.template
        assert template is not None
        log.write("S", template.name, context.task.name, context.scheduled_at)
        await anyio.sleep(pick.uniform(*work))
        log.write("D", template.name, context.task.name, context.scheduled_at)

    async def tick(context: Context) -> None:
        log.write("S", context.task.name, "-", context.scheduled_at)
        await anyio.sleep(TICK_WORK)
        log.write("D", context.task.name, "-", context.scheduled_at)

    return job, tick


def build_app(spec: Mapping[str, Any]) -> ChaosApp:
    """The app a spec describes (the matrix builds it too, to register instances with its templates)."""
    app = Pyncette(
        backend=spec["backend"],
        poll_interval=timedelta(seconds=spec["poll_interval"]),
        batch_size=spec["batch_size"],
        drain_timeout=timedelta(seconds=15),
        **spec["options"],
    )
    job, tick = _bodies(RunLog(spec["runs"], spec["worker"]), tuple(spec["work"]))
    lease = timedelta(seconds=spec["lease"])
    built = ChaosApp(app, {})
    for mode in spec["modes"]:
        template_name, static_name = TASKS[mode]
        options: dict[str, Any] = {"lease_duration": lease, "execution_mode": EXECUTION_MODES[mode]}
        built.templates[mode] = app.dynamic_task(name=template_name, **options)(job)
        app.task(name=static_name, schedule="* * * * * *", **options)(tick)
    faults = spec.get("faults")
    if faults:
        plan = FaultPlan(seed=faults["seed"], lose_answer=faults["lose_answer"])

        def wrap(repository: Repository) -> Repository:
            built.injectors.append(FaultyRepository(repository, plan))
            return built.injectors[-1]

        app.use_repository_wrapper(wrap)
    if os.environ.get("CHAOS_TRACE"):
        app.use_repository_wrapper(lambda repository: Tracer(repository, spec["runs"] + ".trace"))
    return built


class Tracer(Repository):
    """Debugging aid (``CHAOS_TRACE=1``): logs every storage call about a static task, with its outcome."""

    def __init__(self, inner: Repository, path: str) -> None:
        self.inner, self.path = inner, path

    def _log(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"{time.time():.6f} {text}\n")

    async def _call(self, what: str, static: bool, call: Any) -> Any:
        try:
            result = await call
        except BaseException as exc:
            if static:
                self._log(f"{what} -> {type(exc).__name__}: {exc}")
            raise
        if static:
            self._log(f"{what} -> {result!r}")
        return result

    async def register(self, records: Any, *, now: Any, mode: Any) -> Any:
        return await self.inner.register(records, now=now, mode=mode)

    async def claim(self, parent: str, *, now: Any, limit: int, lease_until: Any, token: str) -> Any:
        call = self.inner.claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)
        return await self._call(f"claim {parent} now={now} until={lease_until} token={token}", "/" in parent, call)

    async def commit(self, completions: Any) -> Any:
        static = any("/" in c.parent for c in completions)
        return await self._call(f"commit {completions}", static, self.inner.commit(completions))

    async def unlock(self, leases: Any) -> Any:
        return await self.inner.unlock(leases)

    async def extend(self, lease: Any, *, lease_until: Any) -> Any:
        return await self.inner.extend(lease, lease_until=lease_until)

    async def delete(self, parent: str, name: str) -> Any:
        return await self.inner.delete(parent, name)

    async def delete_many(self, keys: Any) -> Any:
        return await self.inner.delete_many(keys)

    async def get(self, parent: str, name: str) -> Any:
        return await self._call(f"get {parent} {name}", "/" in parent, self.inner.get(parent, name))

    async def list_page(self, parent: str, *, limit: int, continuation: Any) -> Any:
        return await self.inner.list_page(parent, limit=limit, continuation=continuation)


async def serve(spec: Mapping[str, Any]) -> None:
    """Run the app until SIGTERM (graceful; a second one cancels) or the spec's lifetime runs out."""
    built = build_app(spec)
    app = built.app
    clock: Clock = SkewedClock(timedelta(seconds=spec["skew"])) if spec["skew"] else Clock()
    async with app.create(clock=clock) as ctx, anyio.create_task_group() as outer:

        async def watch_signals(ctx: PyncetteContext) -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    if ctx.shutting_down:
                        ctx.cancel()
                        return
                    ctx.shutdown()

        async def lifetime(ctx: PyncetteContext) -> None:
            await anyio.sleep(spec["seconds"])
            ctx.shutdown()

        async def calm_down() -> None:
            # The matrix injects faults while it produces work, then lets what they left behind resolve.
            while not Path(spec["calm"]).exists():
                await anyio.sleep(0.1)
            for injector in built.injectors:
                injector.plan = FaultPlan()

        outer.start_soon(watch_signals, ctx)
        outer.start_soon(lifetime, ctx)
        if built.injectors:
            outer.start_soon(calm_down)
        async with anyio.create_task_group() as inner:
            await inner.start(ctx.run)
            Path(spec["ready"]).write_text(str(os.getpid()))
        outer.cancel_scope.cancel()
    print("INJECTED " + json.dumps(built.injected()), flush=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    anyio.run(serve, json.loads(Path(sys.argv[1]).read_text()))
